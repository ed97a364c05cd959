//! AIP-158 page tokens: opaque to callers, a keyset position to us.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::db::Db;
use crate::error::ApiError;

const SEP: char = '\u{1f}';

/// Encodes the sort key of the last item on a page.
pub fn encode(key: &[&str]) -> String {
    URL_SAFE_NO_PAD.encode(format!("v1{SEP}{}", key.join(&SEP.to_string())))
}

/// Decodes a token made by [`encode`] with `parts` key parts; `None` for the
/// first page (an empty token).
pub fn decode(token: &str, parts: usize) -> Result<Option<Vec<String>>, ApiError> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || ApiError::field("page_token", "is not a token from a previous page of this list");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let mut it = text.split(SEP);
    if it.next() != Some("v1") {
        return Err(invalid());
    }
    let key: Vec<String> = it.map(str::to_owned).collect();
    if key.len() != parts {
        return Err(invalid());
    }
    Ok(Some(key))
}

/// Parses an integer key part of a decoded token.
pub fn int(part: &str) -> Result<i64, ApiError> {
    part.parse().map_err(|_| ApiError::field("page_token", "is not a token from a previous page of this list"))
}

/// Where a page starts in a list ordered newest first, and which rows it
/// takes: the list is `select` (`SELECT … FROM table`) ordered by the
/// `time` column and then the `id` column, both descending.
#[derive(Debug, Clone, Copy)]
pub struct NewestFirst<'a> {
    pub select: &'a str,
    pub time: &'a str,
    pub id: &'a str,
}

impl NewestFirst<'_> {
    /// Up to `limit` rows after `after` (the time and id of the previous
    /// page's last row; `None` for the first page), only those whose
    /// columns equal the `filters`' values. Runs on the read pool.
    pub async fn page<R>(
        &self,
        db: &Db,
        filters: &[(&str, &str)],
        after: Option<(i64, String)>,
        limit: i64,
    ) -> Result<Vec<R>, sqlx::Error>
    where
        R: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> + Send + Unpin,
    {
        let NewestFirst { select, time, id } = *self;
        let (at, last) = after.unwrap_or((i64::MAX, String::new()));
        let only: String =
            filters.iter().enumerate().map(|(i, (column, _))| format!("{column} = ${} AND ", i + 1)).collect();
        let n = filters.len();
        let (a, b, c) = (n + 1, n + 2, n + 3);
        let sql = format!(
            "{select} WHERE {only}({time} < ${a} OR ({time} = ${a} AND (${b} = '' OR {id} < ${b}))) \
             ORDER BY {time} DESC, {id} DESC LIMIT ${c}"
        );
        let mut q = sqlx::query_as::<_, R>(&sql);
        for (_, value) in filters {
            q = q.bind(*value);
        }
        q.bind(at).bind(last).bind(limit).fetch_all(db.reader()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let t = encode(&["123", "ld_1"]);
        assert_eq!(decode(&t, 2).expect("valid"), Some(vec!["123".to_owned(), "ld_1".to_owned()]));
        assert_eq!(decode("", 2).expect("empty"), None);
        assert!(decode("garbage!", 2).is_err());
        assert!(decode(&t, 3).is_err());
    }

    #[tokio::test]
    async fn pages_newest_first_through_ties_and_a_filter() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Db::connect(&format!("sqlite://{}/p.db", dir.path().display())).await.expect("db");
        sqlx::query("CREATE TABLE t (id TEXT PRIMARY KEY, at BIGINT NOT NULL, kind TEXT NOT NULL)")
            .execute(db.writer())
            .await
            .expect("ddl");
        // Three rows share a time: the id breaks the tie.
        for (id, at, kind) in [("a", 1, "x"), ("b", 2, "y"), ("c", 2, "x"), ("d", 2, "x"), ("e", 3, "y")] {
            sqlx::query("INSERT INTO t VALUES ($1, $2, $3)")
                .bind(id)
                .bind(at)
                .bind(kind)
                .execute(db.writer())
                .await
                .expect("insert");
        }
        let list = NewestFirst { select: "SELECT id, at FROM t", time: "at", id: "id" };
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page: Vec<(String, i64)> = list.page(&db, &[], after.clone(), 2).await.expect("page");
            let Some((id, at)) = page.last().cloned() else { break };
            seen.extend(page.into_iter().map(|(id, _)| id));
            after = Some((at, id));
        }
        assert_eq!(seen, ["e", "d", "c", "b", "a"]);

        let only_x: Vec<(String, i64)> = list.page(&db, &[("kind", "x")], Some((2, "d".into())), 10).await.expect("x");
        assert_eq!(only_x, [("c".to_owned(), 2), ("a".to_owned(), 1)]);
        let both: Vec<(String, i64)> = list.page(&db, &[("kind", "x"), ("id", "a")], None, 10).await.expect("x, a");
        assert_eq!(both, [("a".to_owned(), 1)]);
    }
}
