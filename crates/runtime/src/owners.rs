//! Who owns a department's records: the team a department is configured
//! with (its roster), and the round-robin rule that assigns a new record to
//! the next owner on it (docs/domain.md, "Owners").
//!
//! The roster is configuration (`--owners`, or per department under
//! `themodel up`), written `team/owner, team/owner, owner`. Where the rule
//! stands is a row of the service's own database, moved in the same
//! transaction as the record it assigned, so a crash never skips or repeats
//! a turn.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use themodel_proto::common::v1::AssignmentRule;
use themodel_values::{Code, Invalid, OwnerId};

use crate::db::{self, Conn, Db, Script, Table, Value};
use crate::{ApiResult, Rows};

/// One person on a department's roster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub id: OwnerId,
    /// The team the roster puts them in (`None`: no team).
    pub team: Option<Code>,
}

impl Owner {
    /// An owner as a record stored them (empty id: nobody).
    pub fn from_stored(id: String, team: String) -> Option<Owner> {
        (!id.is_empty()).then(|| Owner {
            id: OwnerId::from_stored(id),
            team: (!team.is_empty()).then_some(Code::from_stored(team)),
        })
    }

    pub fn team_str(&self) -> &str {
        self.team.as_ref().map_or("", Code::as_str)
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.team {
            Some(team) => write!(f, "{team}/{}", self.id),
            None => write!(f, "{}", self.id),
        }
    }
}

/// An owner as events and responses carry it: id and team, both empty
/// when unassigned.
pub fn fields(owner: Option<&Owner>) -> (String, String) {
    owner.map(|o| (o.id.to_string(), o.team_str().to_owned())).unwrap_or_default()
}

/// Gives a record whose owner is `slot` to `owner`. Returns the previous
/// owner's id (empty: nobody) when that changed the owner, `None` when
/// `owner` had it already (nothing to record).
pub fn reassign(slot: &mut Option<Owner>, owner: Owner) -> Option<String> {
    if slot.as_ref() == Some(&owner) {
        return None;
    }
    Some(slot.replace(owner).map(|o| o.id.into_string()).unwrap_or_default())
}

/// A department's owners, in the order round-robin goes through them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Roster {
    owners: Arc<[Owner]>,
}

impl FromStr for Roster {
    type Err = String;

    /// `team/owner, team/owner, owner`: owner ids as ids are written
    /// (letters, digits, `.`, `_`, `-`), teams as codes; each owner once.
    fn from_str(s: &str) -> Result<Roster, String> {
        let mut owners: Vec<Owner> = Vec::new();
        for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (team, id) = match entry.split_once('/') {
                Some((team, id)) => {
                    let team = Code::parse(team).map_err(|e| format!("team of {entry:?} {e}"))?;
                    (Some(team), id.trim())
                }
                None => (None, entry),
            };
            let id = OwnerId::parse(id).map_err(|e| format!("owner of {entry:?} {e}"))?;
            if owners.iter().any(|o| o.id == id) {
                return Err(format!("owner {id:?} is on the roster twice"));
            }
            owners.push(Owner { id, team });
        }
        Ok(Roster { owners: owners.into() })
    }
}

impl fmt::Display for Roster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let entries: Vec<String> = self.owners.iter().map(Owner::to_string).collect();
        f.write_str(&entries.join(", "))
    }
}

impl Roster {
    pub fn is_empty(&self) -> bool {
        self.owners.is_empty()
    }

    /// The owner a request names. With a roster, one of its owners (an
    /// unknown id is refused with the roster's ids); without one, any
    /// well-formed id, in no team.
    pub fn owner(&self, id: &str) -> Result<Owner, Invalid> {
        let parsed = OwnerId::parse(id)?;
        if self.is_empty() {
            return Ok(Owner { id: parsed, team: None });
        }
        self.member(&parsed).cloned().ok_or_else(|| {
            let ids: Vec<&str> = self.owners.iter().map(|o| o.id.as_str()).collect();
            Invalid(format!("{id:?} is not on this department's roster; one of {}", ids.join(", ")))
        })
    }

    /// The roster's entry for `id`.
    pub fn member(&self, id: &OwnerId) -> Option<&Owner> {
        self.owners.iter().find(|o| &o.id == id)
    }

    /// Whether `owner` may keep a record: anyone without a roster, a
    /// current member with one.
    pub fn keeps(&self, owner: &Owner) -> bool {
        self.is_empty() || self.member(&owner.id).is_some()
    }

    /// The owner of round-robin turn `turn` (`None` without a roster).
    pub fn turn(&self, turn: i64) -> Option<&Owner> {
        let len = i64::try_from(self.owners.len()).ok().filter(|&n| n > 0)?;
        self.owners.get(usize::try_from(turn.rem_euclid(len)).ok()?)
    }
}

/// Where a round-robin rule stands: the turn of the next record it assigns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    pub rule: &'static str,
    pub next: i64,
}

/// The `round_robin` table as written.
const ROUND_ROBIN: Table = Table { name: "round_robin", columns: &["rule", "turn"], key: 1 };

/// A batch's round-robin turns, by rule.
pub type Turns = Rows<&'static str, Turn>;

/// Loads `rule`'s turn into `turns` (once per batch; a rule that never
/// assigned starts at 0).
pub async fn load_turn(conn: &mut Conn, db: &Db, rule: &'static str, turns: &mut Turns) -> Result<(), sqlx::Error> {
    if turns.missing([&rule]).is_empty() {
        return Ok(());
    }
    let rows: Vec<(String, i64)> =
        db::select_in(conn, db, "SELECT rule, turn FROM round_robin WHERE rule IN ", "", &[rule]).await?;
    let next = rows.first().map(|r| r.1);
    turns.loaded(rule, next.map(|next| Turn { rule, next }));
    Ok(())
}

/// The owner `rule` gives the next record, and the turn after it (`None`
/// without a roster: nothing is assigned and the turn stays).
pub fn next_owner(turns: &Turns, rule: &'static str, roster: &Roster) -> ApiResult<Option<(Owner, Turn)>> {
    let next = turns.get(&rule)?.map_or(0, |t| t.next);
    Ok(roster.turn(next).map(|owner| (owner.clone(), Turn { rule, next: next.wrapping_add(1) })))
}

/// The owner a record was given, and how they were chosen.
pub type Assigned = Option<(Owner, AssignmentRule)>;

/// The owner a record that comes through gets: `kept` (the owner it had,
/// when the roster still keeps them), or else the next in turn, with the
/// turn to store. Neither without a roster and an owner.
pub fn kept_or_next(
    kept: Option<Owner>,
    turns: &Turns,
    rule: &'static str,
    roster: &Roster,
) -> ApiResult<(Assigned, Option<Turn>)> {
    if let Some(kept) = kept {
        return Ok((Some((kept, AssignmentRule::Kept)), None));
    }
    Ok(match next_owner(turns, rule, roster)? {
        Some((next, turn)) => (Some((next, AssignmentRule::RoundRobin)), Some(turn)),
        None => (None, None),
    })
}

/// Writes the turns a batch moved.
pub fn flush_turns<'s>(script: &mut Script<'s>, turns: &'s Turns) {
    let values = |t: &'s Turn| vec![Value::from(t.rule), Value::from(t.next)];
    script.upsert(&ROUND_ROBIN, turns.changes().map(|(before, after)| (before.map(values), values(after))));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_roster_as_written() {
        let r: Roster = "east/aki, East/ben ,chika".parse().expect("valid");
        assert_eq!(r.to_string(), "east/aki, east/ben, chika");
        assert_eq!(r.turn(0).map(|o| o.id.as_str()), Some("aki"));
        assert_eq!(r.turn(4).map(|o| o.id.as_str()), Some("ben"));
        assert_eq!(r.turn(-1).map(|o| o.id.as_str()), Some("chika"), "never out of range");
        assert!(Roster::default().turn(3).is_none());
        assert!("aki, aki".parse::<Roster>().unwrap_err().contains("twice"));
        assert!("east/a b".parse::<Roster>().unwrap_err().contains("owner of"));
        assert!("e!/aki".parse::<Roster>().unwrap_err().contains("team of"));
    }

    #[test]
    fn owners_a_request_may_name() {
        let r: Roster = "east/aki, west/chika".parse().expect("valid");
        assert_eq!(r.owner("chika").expect("member").team_str(), "west");
        let e = r.owner("zed").unwrap_err().0;
        assert!(e.contains("one of aki, chika"), "{e}");
        assert!(r.owner("").is_err());
        let open = Roster::default();
        assert_eq!(open.owner("zed").expect("any id without a roster").team, None);
        assert!(open.keeps(&Owner { id: OwnerId::parse("zed").expect("id"), team: None }));
        assert!(!r.keeps(&Owner { id: OwnerId::parse("zed").expect("id"), team: None }));
    }

    #[test]
    fn reassigning_says_whom_it_took_the_record_from() {
        let r: Roster = "east/aki, west/chika".parse().expect("valid");
        let (aki, chika) = (r.owner("aki").expect("aki"), r.owner("chika").expect("chika"));
        let mut slot = None;
        assert_eq!(reassign(&mut slot, aki.clone()), Some(String::new()), "from nobody");
        assert_eq!(reassign(&mut slot, aki), None, "already theirs");
        assert_eq!(reassign(&mut slot, chika.clone()), Some("aki".to_owned()));
        assert_eq!(slot, Some(chika));
    }
}
