use std::sync::Arc;
use std::time::Duration;

use redis::Cmd;

use super::*;
use crate::redis::{RedisSettings, RedisStore};

fn params(rate: u64, quota_max: i64) -> CountParams {
    CountParams {
        rate,
        per_us: 60_000_000,
        quota_max,
        renewal: 3600,
    }
}

/// The batch a count of n found, as the n requests would have seen it one by one.
fn counted(p: CountParams, n: i64, window_before: i64, used_before: i64) -> Counted {
    let rate_i = i64::try_from(p.rate).unwrap();
    Counted {
        params: p,
        rate_fits: if p.rate > 0 {
            (rate_i - window_before).clamp(0, n)
        } else {
            n
        },
        quota_fits: if p.quota_max > 0 {
            (p.quota_max - used_before).clamp(0, n)
        } else {
            n
        },
        window_before,
        used_before,
        renews_at: 1000,
        retry_after_ns: 7,
    }
}

#[test]
fn a_batch_admits_the_first_requests_that_fit_both_limits() {
    // Rate: 3 slots left; quota: 5 left; a batch of 6.
    let c = counted(params(10, 100), 6, 7, 95);
    let answers: Vec<_> = (0..6).map(|i| c.answer(i)).collect();
    for (i, a) in answers.iter().take(3).enumerate() {
        let a = a.as_ref().unwrap();
        let i = i64::try_from(i).unwrap();
        assert_eq!(
            a.rate.unwrap().remaining,
            u64::try_from(10 - (7 + i + 1)).unwrap()
        );
        assert_eq!(a.quota.unwrap().remaining, 100 - (95 + i + 1));
    }
    for a in &answers[3..] {
        let Err(Limited::Rate(d)) = a else {
            panic!("want a rate refusal, got {a:?}")
        };
        assert_eq!((d.allowed, d.remaining, d.retry_after_ns), (false, 0, 7));
    }
}

#[test]
fn requests_past_the_quota_but_within_the_rate_are_quota_refusals() {
    // Quota: 2 left; rate: plenty; a batch of 4.
    let c = counted(params(1000, 10), 4, 0, 8);
    assert!(c.answer(0).is_ok());
    assert_eq!(c.answer(1).unwrap().quota.unwrap().remaining, 0);
    for i in 2..4 {
        let Err(Limited::Quota(q)) = c.answer(i) else {
            panic!("want a quota refusal")
        };
        assert_eq!((q.allowed, q.remaining, q.renews_at), (false, 0, 1000));
    }
}

#[test]
fn a_counter_already_past_its_limit_refuses_the_whole_batch() {
    // Other nodes' refused requests may have pushed the count past the limit.
    let c = counted(params(0, 10), 3, 0, 12);
    assert!((0..3).all(|i| matches!(c.answer(i), Err(Limited::Quota(_)))));
    let c = counted(params(5, 0), 3, 9, 0);
    assert!((0..3).all(|i| matches!(c.answer(i), Err(Limited::Rate(_)))));
}

#[test]
fn only_the_limits_that_apply_are_reported() {
    let c = counted(params(0, 10), 1, 0, 0);
    let a = c.answer(0).unwrap();
    assert!(a.rate.is_none() && a.quota.is_some());
    let c = counted(params(10, 0), 1, 0, 0);
    let a = c.answer(0).unwrap();
    assert!(a.rate.is_some() && a.quota.is_none());
}

#[test]
fn window_cache_answers_only_for_the_same_window() {
    let mut w = WindowCache::default();
    assert_eq!(w.older_sum(10, 30), None);
    w.remember(10, 30, 42);
    assert_eq!(w.older_sum(10, 30), Some(42));
    assert_eq!(w.older_sum(11, 30), None);
    assert_eq!(w.older_sum(11, 31), None);
}

#[test]
fn renewal_time_rounds_up_to_the_second() {
    assert_eq!(renews_at(100, 1), 101);
    assert_eq!(renews_at(100, 1000), 101);
    assert_eq!(renews_at(100, 1001), 102);
    assert_eq!(renews_at(100, -1), 0);
    assert_eq!(renews_at(100, -2), 0);
}

/// A store on a private redis-server, and a plain connection to look at its counters.
async fn private_redis() -> (
    tollgate_testkit::redis::RedisServer,
    Arc<RedisStore>,
    redis::aio::MultiplexedConnection,
) {
    let server = tollgate_testkit::redis::RedisServer::start().await;
    let url = format!("redis://{}", server.addr());
    let store = RedisStore::new(RedisSettings {
        urls: vec![url.clone()],
        cluster: false,
        timeout: Duration::from_secs(2),
        node_secret: String::new(),
        allow_insecure: false,
        ca_pem: None,
    })
    .unwrap();
    let conn = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    (server, store, conn)
}

async fn run<T: redis::FromRedisValue>(
    conn: &mut redis::aio::MultiplexedConnection,
    cmd: &Cmd,
) -> T {
    cmd.query_async(conn).await.unwrap()
}

async fn counter(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> Option<i64> {
    run(conn, redis::cmd("GET").arg(key)).await
}

#[tokio::test]
async fn a_second_node_starting_the_period_does_not_move_its_end() {
    let (_server, _store, mut conn) = private_redis().await;
    let k = &keyspace::quota("", "k");
    run::<()>(&mut conn, redis::cmd("SET").arg(k).arg(3)).await;
    run::<i64>(&mut conn, &quota_start_period(k, 3600)).await;
    let first: i64 = run(&mut conn, redis::cmd("PTTL").arg(k)).await;
    assert!(first > 3_590_000, "{first}");
    tokio::time::sleep(Duration::from_millis(20)).await;
    // Another node saw the same new counter without an expiry and starts the period too.
    run::<i64>(&mut conn, &quota_start_period(k, 3600)).await;
    let second: i64 = run(&mut conn, redis::cmd("PTTL").arg(k)).await;
    assert!(
        second <= first - 10,
        "the end moved from {first} to {second}"
    );
    // So a take-back counted after the first start still lands in its period.
    assert_eq!(
        run::<i64>(&mut conn, &quota_take_back(k, 1, first)).await,
        1
    );
    assert_eq!(counter(&mut conn, k).await, Some(2));
}

#[tokio::test]
async fn a_quota_take_back_lands_only_in_the_period_it_was_counted_in() {
    let (_server, _store, mut conn) = private_redis().await;
    let k = &keyspace::quota("", "k");
    let set = |v: i64, px: Option<i64>| {
        let mut c = redis::cmd("SET");
        c.arg(k).arg(v);
        if let Some(px) = px {
            c.arg("PX").arg(px);
        }
        c
    };
    // Same period, counted with its expiry: given back.
    run::<()>(&mut conn, &set(10, Some(60_000))).await;
    assert_eq!(
        run::<i64>(&mut conn, &quota_take_back(k, 2, 60_000)).await,
        1
    );
    assert_eq!(counter(&mut conn, k).await, Some(8));
    // Same period, counted before any node had set its expiry: given back.
    run::<()>(&mut conn, &set(5, None)).await;
    assert_eq!(run::<i64>(&mut conn, &quota_take_back(k, 1, -1)).await, 1);
    assert_eq!(counter(&mut conn, k).await, Some(4));
    // The period ended and no request has started the next: nothing made below zero.
    run::<()>(&mut conn, redis::cmd("DEL").arg(k)).await;
    assert_eq!(
        run::<i64>(&mut conn, &quota_take_back(k, 3, 60_000)).await,
        0
    );
    assert_eq!(counter(&mut conn, k).await, None);
    // The next period was started by another node, its expiry not set yet.
    run::<()>(&mut conn, &set(1, None)).await;
    assert_eq!(
        run::<i64>(&mut conn, &quota_take_back(k, 3, 5_000)).await,
        0
    );
    assert_eq!(counter(&mut conn, k).await, Some(1));
    // The next period with its expiry: more time left than the count saw.
    run::<()>(&mut conn, &set(1, Some(60_000))).await;
    assert_eq!(
        run::<i64>(&mut conn, &quota_take_back(k, 3, 5_000)).await,
        0
    );
    assert_eq!(counter(&mut conn, k).await, Some(1));
}

#[tokio::test]
async fn a_batch_refused_by_the_quota_gives_back_only_what_it_counted_in_its_own_period() {
    let (_server, store, mut conn) = private_redis().await;
    let quota_key = keyspace::quota("", "k");
    let q = quota_key.as_str();
    let spec = CountSpec {
        buckets_key: keyspace::buckets(&keyspace::rate_limit("", "k")),
        quota_key: quota_key.clone(),
        params: params(0, 3),
    };
    let now = tollgate_session::time::unix_now();
    let count_three = async || {
        store
            .count(&spec, 3, now, &mut WindowCache::default())
            .await
            .unwrap()
    };
    // Two of three used; a batch of three: one admitted, two refused and given back.
    run::<()>(
        &mut conn,
        redis::cmd("SET").arg(q).arg(2).arg("EX").arg(3600),
    )
    .await;
    let (counted, followup) = count_three().await;
    assert!(counted.answer(0).is_ok());
    assert!(counted.answer(1).is_err() && counted.answer(2).is_err());
    assert_eq!(counter(&mut conn, q).await, Some(5));
    store.follow_up(followup).await;
    assert_eq!(counter(&mut conn, q).await, Some(3));

    // The same near the end of a period, which ends before the take-back: another node
    // starts the next one with a request of its own, and that period keeps it.
    run::<()>(
        &mut conn,
        redis::cmd("SET").arg(q).arg(2).arg("PX").arg(10_000),
    )
    .await;
    let (_, followup) = count_three().await;
    run::<()>(
        &mut conn,
        redis::cmd("SET").arg(q).arg(1).arg("EX").arg(3600),
    )
    .await;
    store.follow_up(followup).await;
    assert_eq!(counter(&mut conn, q).await, Some(1));
}
