use super::*;

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
}

fn member(id: &str, created: i64, version: i64, condition: Condition) -> Member {
    Member {
        id: id.into(),
        created_at: at(created),
        template_version: version,
        condition,
        unhealthy_since: None,
        ever_healthy: condition == Condition::Healthy,
    }
}

fn rules(desired: u32) -> Rules {
    Rules {
        desired,
        max_surge: 1,
        min_healthy_percent: 100,
        replace_after: Duration::from_secs(30),
        health_grace: Duration::from_secs(300),
        template_version: 1,
        refreshing: false,
    }
}

fn retired(d: &Decision) -> Vec<(&str, Reason)> {
    d.retire.iter().map(|(id, r)| (id.as_str(), *r)).collect()
}

#[test]
fn an_empty_group_creates_desired_members() {
    let d = decide(&[], &rules(3), at(0));
    assert_eq!(d.create, 3);
    assert!(d.retire.is_empty());
}

#[test]
fn members_being_made_count_so_nothing_is_made_twice() {
    let m = [
        member("a", 0, 1, Condition::Healthy),
        member("b", 1, 1, Condition::NotHealthy),
        member("c", 2, 1, Condition::Busy),
    ];
    assert_eq!(decide(&m, &rules(3), at(10)), Decision::default());
}

#[test]
fn lowering_desired_retires_the_newest_not_yet_serving_first() {
    let m = [
        member("a", 0, 1, Condition::Healthy),
        member("b", 5, 1, Condition::Healthy),
        member("c", 3, 1, Condition::NotHealthy),
    ];
    let d = decide(&m, &rules(1), at(10));
    assert_eq!(d.create, 0);
    assert_eq!(
        retired(&d),
        vec![("c", Reason::ScaleIn), ("b", Reason::ScaleIn)]
    );
}

#[test]
fn gone_members_are_replaced() {
    let m = [
        member("a", 0, 1, Condition::Healthy),
        member("b", 1, 1, Condition::Gone),
    ];
    let d = decide(&m, &rules(2), at(10));
    assert_eq!(d.create, 1);
    assert!(d.retire.is_empty());
}

#[test]
fn a_member_down_behind_carves_back_goes_at_once_and_is_replaced() {
    let m = [
        member("a", 0, 1, Condition::Healthy),
        member("b", 1, 1, Condition::Down),
    ];
    let d = decide(&m, &rules(2), at(10));
    assert_eq!(d.create, 1);
    assert_eq!(retired(&d), vec![("b", Reason::Down)]);
}

#[test]
fn an_unhealthy_member_is_replaced_first_and_retired_once_its_replacement_serves() {
    let mut sick = member("b", 1, 1, Condition::NotHealthy);
    sick.ever_healthy = true;
    sick.unhealthy_since = Some(at(100));
    let a = member("a", 0, 1, Condition::Healthy);
    // Within replace_after: left alone.
    let d = decide(&[a.clone(), sick.clone()], &rules(2), at(120));
    assert_eq!(d, Decision::default());
    // Past it: a replacement is made, the sick one stays while it is not in service.
    let d = decide(&[a.clone(), sick.clone()], &rules(2), at(140));
    assert_eq!(d.create, 1);
    assert!(d.retire.is_empty());
    let booting = member("c", 140, 1, Condition::NotHealthy);
    let d = decide(&[a.clone(), sick.clone(), booting], &rules(2), at(150));
    assert_eq!(d, Decision::default());
    let serving = member("c", 140, 1, Condition::Healthy);
    let d = decide(&[a, sick, serving], &rules(2), at(160));
    assert_eq!(d.create, 0);
    assert_eq!(retired(&d), vec![("b", Reason::Unhealthy)]);
}

#[test]
fn a_new_member_gets_the_health_grace_before_it_is_replaced() {
    let mut new = member("a", 0, 1, Condition::NotHealthy);
    new.unhealthy_since = Some(at(0));
    assert_eq!(decide(&[new.clone()], &rules(1), at(200)).create, 0);
    assert_eq!(decide(&[new], &rules(1), at(301)).create, 1);
}

#[test]
fn a_refresh_surges_one_then_retires_one_old_member_per_new_one_in_service() {
    let mut r = rules(3);
    r.template_version = 2;
    r.refreshing = true;
    let old = [
        member("a", 0, 1, Condition::Healthy),
        member("b", 1, 1, Condition::Healthy),
        member("c", 2, 1, Condition::Healthy),
    ];
    let d = decide(&old, &r, at(10));
    assert_eq!((d.create, d.retire.len()), (1, 0));
    // The surge member boots: nothing more until it serves.
    let mut m = old.to_vec();
    m.push(member("d", 10, 2, Condition::NotHealthy));
    assert_eq!(decide(&m, &r, at(20)), Decision::default());
    // It serves: the oldest goes.
    m[3].condition = Condition::Healthy;
    let d = decide(&m, &r, at(30));
    assert_eq!(d.create, 0);
    assert_eq!(retired(&d), vec![("a", Reason::Refresh)]);
    // Once gone, the next surge member.
    m[0].condition = Condition::Gone;
    let d = decide(&m, &r, at(40));
    assert_eq!((d.create, d.retire.len()), (1, 0));
    // All replaced: done.
    let new = [
        member("d", 10, 2, Condition::Healthy),
        member("e", 40, 2, Condition::Healthy),
        member("f", 50, 2, Condition::Healthy),
    ];
    let d = decide(&new, &r, at(60));
    assert!(d.refresh_done);
    assert_eq!((d.create, d.retire.len()), (0, 0));
}

#[test]
fn a_refresh_never_lets_healthy_members_fall_below_the_minimum() {
    let mut r = rules(4);
    r.template_version = 2;
    r.refreshing = true;
    r.max_surge = 0;
    r.min_healthy_percent = 50;
    let m = [
        member("a", 0, 1, Condition::Healthy),
        member("b", 1, 1, Condition::Healthy),
        member("c", 2, 1, Condition::Healthy),
        member("d", 3, 1, Condition::Healthy),
    ];
    // No surge: one goes first (4 -> 3 in service, at least 2 stay).
    let d = decide(&m, &r, at(10));
    assert_eq!((d.create, retired(&d)), (0, vec![("a", Reason::Refresh)]));
    let mut m = m.to_vec();
    m[0].condition = Condition::Gone;
    let d = decide(&m, &r, at(20));
    assert_eq!((d.create, d.retire.len()), (1, 0));
}

#[test]
fn a_paused_refresh_only_keeps_the_count() {
    let mut r = rules(2);
    r.template_version = 2;
    let m = [
        member("a", 0, 1, Condition::Healthy),
        member("b", 1, 1, Condition::Healthy),
    ];
    assert_eq!(decide(&m, &r, at(10)), Decision::default());
}

#[test]
fn outdated_members_that_do_not_serve_go_first_in_a_refresh() {
    let mut r = rules(2);
    r.template_version = 2;
    r.refreshing = true;
    let m = [
        member("a", 0, 1, Condition::Healthy),
        member("b", 1, 1, Condition::NotHealthy),
        member("c", 5, 2, Condition::Healthy),
    ];
    let d = decide(&m, &r, at(10));
    assert_eq!(retired(&d), vec![("b", Reason::Refresh)]);
}

#[test]
fn replacements_that_never_pass_their_check_do_not_pile_up() {
    let r = rules(2);
    // Two members, both past their grace without ever being healthy: both go, two come.
    let mut a = member("a", 0, 1, Condition::NotHealthy);
    a.unhealthy_since = Some(at(0));
    let mut b = member("b", 1, 1, Condition::NotHealthy);
    b.unhealthy_since = Some(at(0));
    let d = decide(&[a, b], &r, at(400));
    assert_eq!(d.create, 2);
    assert_eq!(d.retire.len(), 2);
    // A member that served and fails now stays while its replacement boots, but no more
    // than desired + surge are kept.
    let mut sick = member("c", 0, 1, Condition::NotHealthy);
    sick.ever_healthy = true;
    sick.unhealthy_since = Some(at(0));
    let mut sick2 = sick.clone();
    sick2.id = "d".into();
    let booting = member("e", 100, 1, Condition::NotHealthy);
    let d = decide(&[sick, sick2, booting], &r, at(400));
    assert_eq!(d.create, 0, "2 kept failing + 1 booting = desired + surge");
    assert!(d.retire.is_empty());
}

#[test]
fn without_surge_a_refresh_of_one_member_can_begin() {
    let mut r = rules(1);
    r.template_version = 2;
    r.refreshing = true;
    r.max_surge = 0;
    r.min_healthy_percent = 50;
    let d = decide(&[member("a", 0, 1, Condition::Healthy)], &r, at(10));
    assert_eq!(retired(&d), vec![("a", Reason::Refresh)]);
}
