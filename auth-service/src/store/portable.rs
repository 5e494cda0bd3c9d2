//! The queries both backends run word for word: portable SQL with `$N`
//! placeholders (SQLite reads `$N` as the N-th argument, as Postgres does).
//! Each backend's own module keeps only the queries whose dialects differ
//! (upserts, locks, array parameters, notifications); this macro writes the
//! `Store` implementation with both, so a portable query exists once.
//!
//! A macro rather than generic code over `sqlx::Database`: the bounds sqlx
//! needs for a generic executor (encode/decode/type for every bound value,
//! per database) would outweigh the queries themselves.

pub(super) const USER_COLUMNS: &str = "id, email, password_hash, roles, scope, email_verified, banned_at, totp_secret, totp_pending, totp_last_step, created_at, password_version";
pub(super) const SESSION_COLUMNS: &str =
    "id, user_id, device_secret_hash, created_at, last_seen_at, expires_at, revoked_at, revoke_reason, ip, user_agent, dpop_jkt, dpop_bound_at";

/// Records this process's current KEK in `kek_succession`, where its place
/// is the moment it was first put in use (a later start keeps it).
macro_rules! record_kek_in_use {
    ($executor:expr, $kek:expr) => {{
        sqlx::query(
            "INSERT INTO kek_succession (kek_id) VALUES ($1) ON CONFLICT (kek_id) DO NOTHING",
        )
        .bind($kek.id())
        .execute($executor)
        .await?;
    }};
}

/// What this process leaves sealed as it is (`sealed::Kept`): values under
/// its current KEK or under one put in use after it.
macro_rules! kept_sealed {
    ($executor:expr, $kek:expr) => {{
        let newer: Vec<String> = sqlx::query_scalar(
            "SELECT kek_id FROM kek_succession \
             WHERE position > (SELECT position FROM kek_succession WHERE kek_id = $1) ORDER BY position",
        )
        .bind($kek.id())
        .fetch_all($executor)
        .await?;
        $crate::store::sealed::Kept::new(&$kek, &newer)?
    }};
}

/// How many secrets at rest are sealed with none of the KEKs `$kept`
/// (a `sealed::Kept`) names, or are in clear. Reads only, locks nothing.
macro_rules! count_not_kept {
    ($store:expr, $kept:expr) => {{
        let kept = $kept;
        // Text patterns for the TOTP columns ($1…), the same as bytes for the keys'.
        let n = kept.patterns().len();
        let sql = format!(
            "SELECT (SELECT COUNT(*) FROM users WHERE totp_secret IS NOT NULL AND {}) \
                  + (SELECT COUNT(*) FROM users WHERE totp_pending IS NOT NULL AND {}) \
                  + (SELECT COUNT(*) FROM signing_keys WHERE length(private_key) > 0 AND {})",
            kept.excluded("totp_secret", 1),
            kept.excluded("totp_pending", 1),
            kept.excluded("private_key", n + 1),
        );
        let mut query = sqlx::query_scalar(&sql);
        for pattern in kept.patterns() {
            query = query.bind(pattern.as_str());
        }
        for pattern in kept.patterns() {
            query = query.bind(pattern.as_bytes());
        }
        let n: i64 = query.fetch_one($store.writer()).await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }};
}

/// Revokes every live session of a user inside the transaction `$tx`, one
/// feed event each (kept until `$feed_expires_at`, or until the user's last
/// access token expires if later): the ids of the sessions ended. A macro
/// for the same reason as [`impl_store`]; used by it.
macro_rules! revoke_sessions_in {
    ($tx:ident, $user_id:expr, $reason:expr, $now:expr, $feed_expires_at:expr) => {{
        // The user's row first, as a sign-in does before it ends sessions over
        // the cap: both take the same locks in the same order (no deadlock).
        sqlx::query(&format!("SELECT id FROM users WHERE id = $1{UPDATE_LOCK}"))
            .bind($user_id)
            .fetch_optional(&mut *$tx)
            .await?;
        let ids: Vec<String> = sqlx::query_scalar(
            "UPDATE sessions SET revoked_at = $1, revoke_reason = $2 WHERE user_id = $3 AND revoked_at IS NULL RETURNING id",
        )
        .bind($now)
        .bind($reason)
        .bind($user_id)
        .fetch_all(&mut *$tx)
        .await?;
        let feed_expires_at = $feed_expires_at.max(latest_token_expiry(&mut $tx, $user_id).await?);
        let published = sessions_still_verifiable!($tx, $user_id, $now, $feed_expires_at);
        for id in ids.iter().filter(|id| published.contains(*id)) {
            append_event(&mut $tx, FeedKind::Session, id, None, feed_expires_at, $now).await?;
        }
        ids
    }};
}

/// Appends inside `$tx` the feed event of session `$session_id`, revoked at
/// `$now`: kept until `$feed_expires_at`, or until the session's last access
/// token expires if later. A macro for the same reason as [`impl_store`].
macro_rules! session_event_in {
    ($tx:ident, $session_id:expr, $feed_expires_at:expr, $now:expr) => {{
        let latest: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(expires_at), 0) FROM access_tokens WHERE session_id = $1",
        )
        .bind($session_id)
        .fetch_one(&mut *$tx)
        .await?;
        append_event(
            &mut $tx,
            FeedKind::Session,
            $session_id,
            None,
            $feed_expires_at.max(latest),
            $now,
        )
        .await?;
    }};
}

/// Inside `$tx`, ends the live sessions of `$user_id` past the newest
/// `$cap.max_live` by last use (a sign-in or a refresh), the new session
/// `$new_id` counted first whatever its times say, one feed event each: the
/// ids of those ended. The least recently used go: a device in use keeps its
/// session, one left behind (or a script signing in over and over) does not.
macro_rules! end_sessions_past_cap_in {
    ($tx:ident, $user_id:expr, $new_id:expr, $cap:expr, $now:expr) => {{
        let cap: SessionCap = $cap;
        let others_kept = i64::from(cap.max_live.saturating_sub(1));
        let ids: Vec<String> = sqlx::query_scalar(
            "UPDATE sessions SET revoked_at = $1, revoke_reason = 'session_limit' \
             WHERE user_id = $2 AND id <> $3 AND revoked_at IS NULL AND expires_at > $1 AND id NOT IN \
             (SELECT id FROM sessions WHERE user_id = $2 AND id <> $3 AND revoked_at IS NULL AND expires_at > $1 \
              ORDER BY last_seen_at DESC, created_at DESC, id DESC LIMIT $4) \
             RETURNING id",
        )
        .bind($now)
        .bind($user_id)
        .bind($new_id)
        .bind(others_kept)
        .fetch_all(&mut *$tx)
        .await?;
        for id in &ids {
            session_event_in!($tx, id, cap.feed_expires_at, $now);
        }
        ids
    }};
}

/// Of a user's sessions just revoked at `$now` inside `$tx`, the ids whose
/// revocation verifiers still need: a session that has not expired (or did
/// so less than one access-token lifetime ago, `$feed_expires_at − $now`: a
/// token it gave out just before may still verify), or one with an access
/// token still on record (records are kept as long as their revocation
/// would be). Sessions are never deleted: without this, ending "all" of an
/// old account's sessions published one feed event for every session it
/// ever had, each pushed to every filter for nothing.
macro_rules! sessions_still_verifiable {
    ($tx:ident, $user_id:expr, $now:expr, $feed_expires_at:expr) => {{
        let lifetime = $feed_expires_at.saturating_sub($now).max(0);
        let ids: std::collections::HashSet<String> = sqlx::query_scalar(
            "SELECT s.id FROM sessions s WHERE s.user_id = $1 AND s.revoked_at = $2 \
             AND (s.expires_at > $3 OR EXISTS (SELECT 1 FROM access_tokens a WHERE a.session_id = s.id))",
        )
        .bind($user_id)
        .bind($now)
        .bind($now.saturating_sub(lifetime))
        .fetch_all(&mut *$tx)
        .await?
        .into_iter()
        .collect();
        ids
    }};
}

/// Appends inside `$tx` a subject event for a service account's `$subject`
/// (its tokens' `sub`) killing every token issued up to `$now`, or up to the
/// newest one recorded for it if that is later (a token request that raced
/// the change); `$expires_at` moves on as far. Tokens of the ban's last
/// second die too (`iat` has whole seconds). A macro for the same reason as
/// [`impl_store`]; used by it.
macro_rules! ban_service_tokens_in {
    ($tx:ident, $subject:expr, $now:expr, $expires_at:expr) => {{
        let newest: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(issued_at) FROM access_tokens WHERE user_id = $1 AND expires_at > $2",
        )
        .bind($subject)
        .bind($now)
        .fetch_one(&mut *$tx)
        .await?;
        let through = newest.map_or($now, |n| n.max($now));
        let expires_at =
            ($expires_at + (through - $now)).max(latest_token_expiry(&mut $tx, $subject).await?);
        append_event(
            &mut $tx,
            FeedKind::Subject,
            $subject,
            Some(through + 1),
            expires_at,
            $now,
        )
        .await?;
        // The ban's `not_before`: tokens issued from then on pass.
        through + 1
    }};
}

/// Sets a live service account's credential `$column` to `$value` (its
/// `rotated_at` moved on), and with `$ban` kills the tokens it holds, in one
/// transaction: `Ok(false)` when there is no such live account. A macro for
/// the same reason as [`impl_store`]; used by it.
macro_rules! change_service_credential {
    ($store:ident, $column:literal, $value:expr, $client_id:expr, $now:expr, $ban:expr) => {{
        let mut tx = $store.begin_write().await?;
        let r = sqlx::query(&format!(
            "UPDATE service_accounts SET {} = $1, {NEXT_ROTATION} WHERE client_id = $3 AND disabled_at IS NULL",
            $column
        ))
        .bind($value)
        .bind($now)
        .bind($client_id)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() != 1 {
            return Ok(false);
        }
        if let Some(ban) = $ban {
            // Tokens of the new credential carry an `iat` of at least its
            // `rotated_at` (`tokens::issue_for_service`): none falls under the ban.
            let not_before = ban_service_tokens_in!(tx, ban.subject, $now, ban.expires_at);
            sqlx::query(
                "UPDATE service_accounts SET rotated_at = CASE WHEN rotated_at < $1 THEN $1 ELSE rotated_at END WHERE client_id = $2",
            )
            .bind(not_before)
            .bind($client_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }};
}

/// How many signing keys `$limit` (a [`PublishedLimit`]) counts as
/// published, read inside `$tx`. A macro for the same reason as [`impl_store`].
macro_rules! published_keys_in {
    ($tx:ident, $limit:expr) => {{
        let limit: PublishedLimit = $limit;
        let published: i64 = sqlx::query_scalar(COUNT_PUBLISHED_KEYS)
            .bind(limit.retired_kept_secs)
            .bind(limit.now)
            .fetch_one(&mut *$tx)
            .await?;
        usize::try_from(published).unwrap_or(usize::MAX)
    }};
}

/// Inserts signing key `$key` (its private half sealed) on `$tx`, not retired.
macro_rules! insert_signing_key_in {
    ($tx:ident, $key:expr) => {{
        let k: &StoredKey = $key;
        sqlx::query(
            "INSERT INTO signing_keys (kid, alg, private_key, public_key, created_at, publish_at, active_at, retired_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, NULL)",
        )
        .bind(&k.kid)
        .bind(&k.alg)
        .bind(&k.private_key)
        .bind(&k.public_key)
        .bind(k.created_at)
        .bind(k.publish_at)
        .bind(k.active_at)
        .execute(&mut *$tx)
        .await?;
    }};
}

/// [`Store::withdraw_signing_key`] inside `$tx`, a transaction that holds
/// the backend's signing-key lock (as a rotation does); `$successor` has its
/// private half sealed. Commits only when it wrote.
macro_rules! withdraw_key_in {
    ($tx:ident, $kid:expr, $now:expr, $successor:expr) => {{
        let (kid, now): (&str, i64) = ($kid, $now);
        let row: Option<(Option<i64>, Option<i64>)> =
            sqlx::query_as("SELECT withdrawn_at, retired_at FROM signing_keys WHERE kid = $1")
                .bind(kid)
                .fetch_optional(&mut *$tx)
                .await?;
        match row {
            None => Withdrawal::Unknown,
            Some((Some(_), _)) => Withdrawal::Already,
            Some((None, retired_at)) => {
                // Retired long ago too: a release from before withdrawal knows
                // only `retired_at`, and would publish (and verify with) a key
                // that has none, or one retired lately, for the token lifetime
                // after it. This release looks at `withdrawn_at` first.
                sqlx::query(
                    "UPDATE signing_keys SET withdrawn_at = $1, private_key = $2, retired_at = 0 WHERE kid = $3",
                )
                .bind(now)
                .bind(Vec::<u8>::new())
                .bind(kid)
                .execute(&mut *$tx)
                .await?;
                // It signs now, or would once a pending key's lead is over
                // (then nothing would be left to sign until it is).
                let replaced = retired_at.is_none_or(|r| r > now);
                if replaced {
                    sqlx::query(
                        "UPDATE signing_keys SET retired_at = $1 \
                         WHERE withdrawn_at IS NULL AND (retired_at IS NULL OR retired_at > $1)",
                    )
                    .bind(now)
                    .execute(&mut *$tx)
                    .await?;
                    insert_signing_key_in!($tx, $successor);
                }
                $tx.commit().await?;
                Withdrawal::Done { replaced }
            }
        }
    }};
}

/// Records an issued access token (its jti, for the feed's revocations) on
/// `$executor`: a pool, or `&mut *tx` to commit it with the write it belongs to.
macro_rules! insert_access_token {
    ($executor:expr, $token:expr) => {{
        let t: &IssuedToken = $token;
        sqlx::query("INSERT INTO access_tokens (jti, user_id, session_id, issued_at, expires_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&t.jti)
            .bind(&t.user_id)
            .bind(&t.session_id)
            .bind(t.issued_at)
            .bind(t.expires_at)
            .execute($executor)
            .await?;
    }};
}

/// The account's authenticator (its confirmed TOTP secret), opened, read in
/// transaction `$tx` under `UPDATE_LOCK`: `Some(None)` when it has none,
/// `None` when there is no such user. Sealed values differ on every write,
/// so an authenticator is compared opened, never by its stored value.
macro_rules! authenticator_in {
    ($store:expr, $tx:expr, $user_id:expr) => {{
        let row: Option<(Option<String>,)> = sqlx::query_as(&format!(
            "SELECT totp_secret FROM users WHERE id = $1{UPDATE_LOCK}"
        ))
        .bind($user_id)
        .fetch_optional(&mut *$tx)
        .await?;
        match row {
            None => None,
            Some((None,)) => Some(None),
            Some((Some(sealed),)) => Some(Some(
                $store.open_secret(&totp_purpose($user_id), sealed.as_bytes())?,
            )),
        }
    }};
}

/// `impl Store for $store { <the backend's own methods> <the portable ones> }`.
/// The backend provides `reader()` and `writer()` (its pools for reads and
/// writes; the same pool on Postgres), the row helpers `user`,
/// `signing_key` and `seal`, `SHARE_LOCK`: the clause that makes a
/// read in a writing statement wait for, and then see, a concurrent
/// update of the rows it reads (Postgres: ` FOR SHARE`; SQLite: empty,
/// its one writer already runs one write at a time), and `UPDATE_LOCK`:
/// the clause that makes a read lock its rows for an update later in the
/// transaction, so another such transaction waits for this one's commit
/// (Postgres: ` FOR NO KEY UPDATE`; SQLite: empty, for the same reason).
macro_rules! impl_store {
    ($store:ty; $($own:tt)*) => {
        #[::async_trait::async_trait]
        impl Store for $store {
            $($own)*

            async fn ping(&self) -> StoreResult<()> {
                sqlx::query("SELECT 1").execute(self.reader()).await?;
                Ok(())
            }

            async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>> {
                let row: Option<UserRow> = sqlx::query_as(&format!("SELECT {USER_COLUMNS} FROM users WHERE email = $1"))
                    .bind(email)
                    .fetch_optional(self.reader())
                    .await?;
                row.map(|r| self.user(r)).transpose()
            }

            async fn mail_budget_window_start(&self, key: &str) -> StoreResult<Option<i64>> {
                Ok(sqlx::query_scalar("SELECT window_start FROM mail_budget WHERE key = $1")
                    .bind(key)
                    .fetch_optional(self.reader())
                    .await?)
            }

            async fn user_by_id(&self, id: &str) -> StoreResult<Option<User>> {
                let row: Option<UserRow> = sqlx::query_as(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(self.reader())
                    .await?;
                row.map(|r| self.user(r)).transpose()
            }

            async fn list_users(&self, page: &PageRequest) -> StoreResult<Vec<User>> {
                let (at, id) = page.after_ascending();
                let rows: Vec<UserRow> = sqlx::query_as(&format!(
                    "SELECT {USER_COLUMNS} FROM users WHERE (created_at, id) > ($1, $2) ORDER BY created_at, id LIMIT $3"
                ))
                .bind(at)
                .bind(id)
                .bind(i64::from(page.limit))
                .fetch_all(self.reader())
                    .await?;
                rows.into_iter().map(|r| self.user(r)).collect()
            }

            async fn rename_email(&self, user_id: &str, from: &str, to: &str) -> StoreResult<bool> {
                let result = sqlx::query("UPDATE users SET email = $1 WHERE id = $2 AND email = $3")
                    .bind(to)
                    .bind(user_id)
                    .bind(from)
                    .execute(self.writer())
                    .await;
                match result {
                    Ok(r) => Ok(r.rows_affected() == 1),
                    Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(StoreError::Conflict("the email")),
                    Err(e) => Err(e.into()),
                }
            }

            async fn rehash_password(&self, user_id: &str, old: &str, new: &str) -> StoreResult<bool> {
                let r = sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2 AND password_hash = $3")
                    .bind(new)
                    .bind(user_id)
                    .bind(old)
                    .execute(self.writer())
                    .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn set_password(&self, user_id: &str, password_hash: &str) -> StoreResult<()> {
                sqlx::query("UPDATE users SET password_hash = $1, password_version = password_version + 1 WHERE id = $2")
                    .bind(password_hash)
                    .bind(user_id)
                    .execute(self.writer())
                    .await?;
                Ok(())
            }

            async fn set_roles(&self, user_id: &str, roles: &[String]) -> StoreResult<()> {
                sqlx::query("UPDATE users SET roles = $1 WHERE id = $2")
                    .bind(roles.join(" "))
                    .bind(user_id)
                    .execute(self.writer())
                    .await?;
                Ok(())
            }

            async fn put_one_time_token(&self, hash: &str, purpose: TokenPurpose, user_id: &str, expires_at: i64) -> StoreResult<()> {
                sqlx::query("INSERT INTO one_time_tokens (hash, purpose, user_id, expires_at) VALUES ($1, $2, $3, $4)")
                    .bind(hash)
                    .bind(purpose.as_str())
                    .bind(user_id)
                    .bind(expires_at)
                    .execute(self.writer())
                    .await?;
                Ok(())
            }

            async fn peek_one_time_token(&self, hash: &str, purpose: TokenPurpose, now: i64) -> StoreResult<Option<String>> {
                sqlx::query_scalar(
                    "SELECT user_id FROM one_time_tokens WHERE hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > $3",
                )
                .bind(hash)
                .bind(purpose.as_str())
                .bind(now)
                .fetch_optional(self.reader())
                .await
                .map_err(StoreError::from)
            }

            async fn second_factor_success(&self, user_id: &str) -> StoreResult<()> {
                // The lock too: one written meanwhile by a parallel attempt past the limit
                // is lifted by the owner's correct code.
                sqlx::query("UPDATE second_factor_guard SET attempts = 0, lockouts = 0, locked_until = 0 WHERE user_id = $1")
                    .bind(user_id)
                    .execute(self.writer())
                    .await?;
                Ok(())
            }

            async fn second_factor_not_a_guess(&self, user_id: &str) -> StoreResult<()> {
                // Each request counted once: this one's count goes, whatever others
                // counted or a success reset meanwhile. It locked nothing (an attempt
                // past the limit is refused before its code is compared).
                sqlx::query("UPDATE second_factor_guard SET attempts = attempts - 1 WHERE user_id = $1 AND attempts > 0")
                    .bind(user_id)
                    .execute(self.writer())
                    .await?;
                Ok(())
            }

            async fn undo_signin_attempt(&self, key: &str, lock: Option<i64>, seq: i64) -> StoreResult<()> {
                // While the lock this attempt wrote is in force no other attempt counts or
                // locks, so a `locked_until` still equal to it is that lock. Its time goes
                // too, back to the failure before it, so right passwords do not keep old
                // failures alive; but only if no attempt (or failure) was counted since:
                // `last_failure` is then that one's time, and must stay.
                sqlx::query(
                    "UPDATE signin_throttle SET failures = CASE WHEN failures > 0 THEN failures - 1 ELSE 0 END, \
                     locked_until = CASE WHEN locked_until = $2 THEN 0 ELSE locked_until END, \
                     last_failure = CASE WHEN attempt_seq = $3 THEN prior_failure ELSE last_failure END \
                     WHERE key = $1",
                )
                .bind(key)
                .bind(lock)
                .bind(seq)
                .execute(self.writer())
                .await?;
                Ok(())
            }

            async fn clear_signin_failures(&self, key: &str) -> StoreResult<()> {
                sqlx::query("DELETE FROM signin_throttle WHERE key = $1").bind(key).execute(self.writer()).await?;
                Ok(())
            }

            async fn prune_signin_failures(&self, now: i64, before: i64) -> StoreResult<u64> {
                let r = sqlx::query(crate::store::maintenance::SIGNIN_FAILURES)
                    .bind(now)
                    .bind(before)
                    .execute(self.writer())
                    .await?;
                Ok(r.rows_affected())
            }

            async fn put_challenge(&self, c: &Challenge) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO challenges (id, user_id, method, code_hash, expires_at, attempts, created_at, password_version) \
                     VALUES ($1, $2, $3, $4, $5, 0, $6, $7)",
                )
                .bind(&c.id)
                .bind(&c.user_id)
                .bind(&c.method)
                .bind(&c.code_hash)
                .bind(c.expires_at)
                .bind(c.created_at)
                .bind(c.password_version)
                .execute(self.writer())
                .await?;
                Ok(())
            }

            async fn challenge(&self, id: &str) -> StoreResult<Option<Challenge>> {
                let row: Option<ChallengeRow> = sqlx::query_as(
                    "SELECT id, user_id, method, code_hash, expires_at, attempts, consumed_at, created_at, password_version FROM challenges WHERE id = $1",
                )
                .bind(id)
                .fetch_optional(self.reader())
                .await?;
                Ok(row.map(Challenge::from))
            }

            async fn challenge_attempt(&self, id: &str) -> StoreResult<u32> {
                let n: Option<i64> = sqlx::query_scalar("UPDATE challenges SET attempts = attempts + 1 WHERE id = $1 RETURNING attempts")
                    .bind(id)
                    .fetch_optional(self.writer())
                    .await?;
                Ok(n.and_then(|n| u32::try_from(n).ok()).unwrap_or(u32::MAX))
            }

            async fn consume_challenge(&self, id: &str, now: i64) -> StoreResult<bool> {
                let r = sqlx::query("UPDATE challenges SET consumed_at = $1 WHERE id = $2 AND consumed_at IS NULL")
                    .bind(now)
                    .bind(id)
                    .execute(self.writer())
                    .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn set_totp_pending(&self, user_id: &str, secret: &str, session_id: &str, proven: EnrolmentProof<'_>) -> StoreResult<bool> {
                let sealed = self.seal(&totp_purpose(user_id), secret.as_bytes())?;
                // The row locked: what the proof saw (the password's version, the
                // authenticator or its absence) is compared, then the secret written.
                let mut tx = self.begin_write().await?;
                let Some(current) = authenticator_in!(self, tx, user_id) else { return Ok(false) };
                let version: i64 = sqlx::query_scalar("SELECT password_version FROM users WHERE id = $1")
                    .bind(user_id)
                    .fetch_one(&mut *tx)
                    .await?;
                if version != proven.password_version || current.as_deref() != proven.authenticator.map(str::as_bytes) {
                    return Ok(false);
                }
                sqlx::query("UPDATE users SET totp_pending = $1, totp_pending_session = $2 WHERE id = $3")
                    .bind(sealed)
                    .bind(session_id)
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn use_totp_step(&self, user_id: &str, secret: &str, step: i64) -> StoreResult<TotpStep> {
                // The row locked: the authenticator must still be the one whose code
                // this is, as for `set_totp_pending`; then the step, once. Two
                // instances checking the same code agree: one wins.
                let mut tx = self.begin_write().await?;
                if authenticator_in!(self, tx, user_id).flatten().as_deref() != Some(secret.as_bytes()) {
                    return Ok(TotpStep::NotCurrent);
                }
                let r = sqlx::query("UPDATE users SET totp_last_step = $1 WHERE id = $2 AND totp_last_step < $1")
                    .bind(step)
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
                if r.rows_affected() != 1 {
                    return Ok(TotpStep::UsedBefore);
                }
                tx.commit().await?;
                Ok(TotpStep::Recorded)
            }

            async fn clear_totp(&self, user_id: &str, authenticator: &str) -> StoreResult<bool> {
                let mut tx = self.begin_write().await?;
                // The row locked: only the authenticator whose code proved the removal.
                if authenticator_in!(self, tx, user_id).flatten().as_deref() != Some(authenticator.as_bytes()) {
                    return Ok(false);
                }
                sqlx::query("UPDATE users SET totp_secret = NULL, totp_pending = NULL WHERE id = $1")
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn create_session_by(&self, s: &Session, refresh: &RefreshRecord, access: Option<&IssuedToken>, password_version: i64, cap: SessionCap, with: SignedInWith<'_>) -> StoreResult<Option<Vec<String>>> {
                let mut tx = self.begin_write().await?;
                // Signed in with a TOTP code: only while its secret is still the
                // account's (compared opened, the row locked as below), so an
                // authenticator removed or replaced once the code was checked
                // opens no session after that was answered.
                if let SignedInWith::Authenticator(proven) = with {
                    if authenticator_in!(self, tx, &s.user_id).flatten().as_deref() != Some(proven.as_bytes()) {
                        return Ok(None);
                    }
                }
                // Only for a user not banned now, whose password is still the one the
                // sign-in checked. The user row is read under UPDATE_LOCK: a ban or reset
                // under way (each updates that row) is waited for and then seen; one
                // coming later waits for this commit, and then ends this session with the
                // others. A user read earlier by the caller proves nothing. Another
                // sign-in of the user waits too, and then counts this session against
                // the cap (under a share lock both would count without the other's).
                let inserted = sqlx::query(&format!(
                    "INSERT INTO sessions (id, user_id, device_secret_hash, created_at, last_seen_at, expires_at, ip, user_agent, dpop_jkt) \
                     SELECT $1, id, $3, $4, $5, $6, $7, $8, $9 FROM users \
                     WHERE id = $2 AND banned_at IS NULL AND password_version = $10 \
                     AND (NOT $11 OR totp_secret IS NULL){UPDATE_LOCK}"
                ))
                    .bind(&s.id)
                    .bind(&s.user_id)
                    .bind(&s.device_secret_hash)
                    .bind(s.created_at)
                    .bind(s.last_seen_at)
                    .bind(s.expires_at)
                    .bind(&s.ip)
                    .bind(&s.user_agent)
                    .bind(&s.dpop_jkt)
                    .bind(password_version)
                    .bind(with == SignedInWith::MailedCode)
                    .execute(&mut *tx)
                    .await?;
                if inserted.rows_affected() != 1 {
                    return Ok(None);
                }
                sqlx::query("INSERT INTO refresh_tokens (hash, session_id, created_at, expires_at, dpop_bound) VALUES ($1, $2, $3, $4, $5)")
                    .bind(&refresh.hash)
                    .bind(&refresh.session_id)
                    .bind(refresh.created_at)
                    .bind(refresh.expires_at)
                    .bind(refresh.dpop_bound)
                    .execute(&mut *tx)
                    .await?;
                // The access token answered with them, in the same commit: a failure
                // before it leaves no session that nobody holds.
                if let Some(access) = access {
                    insert_access_token!(&mut *tx, access);
                }
                // Last: the feed events take the feed's lock, after every other.
                let ended = end_sessions_past_cap_in!(tx, &s.user_id, &s.id, cap, s.created_at);
                tx.commit().await?;
                Ok(Some(ended))
            }

            async fn refresh_token(&self, hash: &str) -> StoreResult<Option<RefreshRecord>> {
                sqlx::query_as("SELECT hash, session_id, created_at, expires_at, used_at, dpop_bound FROM refresh_tokens WHERE hash = $1")
                    .bind(hash)
                    .fetch_optional(self.reader())
                    .await
                    .map_err(StoreError::from)
            }

            async fn record_access_token(&self, t: &IssuedToken) -> StoreResult<()> {
                insert_access_token!(self.writer(), t);
                Ok(())
            }

            async fn record_service_token(&self, t: &IssuedToken, client_id: &str, credentials_at: i64) -> StoreResult<bool> {
                // The account row read under SHARE_LOCK orders this against a disable or a
                // change of credentials: one under way is waited for and seen (nothing
                // recorded: the account is disabled, or its `rotated_at` moved on from the
                // credentials this request was authenticated with); one coming later waits
                // for this commit and then counts this token (see ban_service_tokens_in).
                let r = sqlx::query(&format!(
                    "INSERT INTO access_tokens (jti, user_id, session_id, issued_at, expires_at) \
                     SELECT $1, $2, $3, $4, $5 FROM service_accounts WHERE client_id = $6 AND disabled_at IS NULL AND rotated_at = $7{SHARE_LOCK}"
                ))
                .bind(&t.jti)
                .bind(&t.user_id)
                .bind(&t.session_id)
                .bind(t.issued_at)
                .bind(t.expires_at)
                .bind(client_id)
                .bind(credentials_at)
                .execute(self.writer())
                .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn access_token(&self, jti: &str) -> StoreResult<Option<IssuedToken>> {
                sqlx::query_as("SELECT jti, user_id, session_id, issued_at, expires_at FROM access_tokens WHERE jti = $1")
                    .bind(jti)
                    .fetch_optional(self.reader())
                    .await
                    .map_err(StoreError::from)
            }

            async fn revoke_session(&self, session_id: &str, reason: &str, now: i64, feed_expires_at: i64) -> StoreResult<bool> {
                let mut tx = self.begin_write().await?;
                let r = sqlx::query("UPDATE sessions SET revoked_at = $1, revoke_reason = $2 WHERE id = $3 AND revoked_at IS NULL")
                    .bind(now)
                    .bind(reason)
                    .bind(session_id)
                    .execute(&mut *tx)
                    .await?;
                if r.rows_affected() != 1 {
                    return Ok(false);
                }
                session_event_in!(tx, session_id, feed_expires_at, now);
                tx.commit().await?;
                Ok(true)
            }

            async fn revoke_user_sessions(&self, user_id: &str, reason: &str, now: i64, feed_expires_at: i64) -> StoreResult<Vec<String>> {
                let mut tx = self.begin_write().await?;
                let ids = revoke_sessions_in!(tx, user_id, reason, now, feed_expires_at);
                // An authenticator enrolment left pending by one of them goes with
                // them (as with a password reset): its key, seen by whoever started
                // it, must not be switched on later by any session.
                sqlx::query("UPDATE users SET totp_pending = NULL WHERE id = $1")
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(ids)
            }

            async fn revoke_token(&self, jti: &str, now: i64, expires_at: i64) -> StoreResult<()> {
                let mut tx = self.begin_write().await?;
                append_event(&mut tx, FeedKind::Token, jti, None, expires_at, now).await?;
                tx.commit().await.map_err(StoreError::from)
            }

            async fn unban_user(&self, user_id: &str) -> StoreResult<bool> {
                let r = sqlx::query("UPDATE users SET banned_at = NULL WHERE id = $1 AND banned_at IS NOT NULL")
                    .bind(user_id)
                    .execute(self.writer())
                    .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn create_service_account(&self, a: &ServiceAccount) -> StoreResult<()> {
                let result = sqlx::query(
                    "INSERT INTO service_accounts (client_id, secret_hash, scope, created_at, rotated_at, public_jwk) VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT(client_id) DO NOTHING",
                )
                .bind(&a.client_id)
                .bind(&a.secret_hash)
                .bind(&a.scope)
                .bind(a.created_at)
                .bind(a.rotated_at)
                .bind(&a.public_jwk)
                .execute(self.writer())
                .await?;
                if result.rows_affected() == 0 {
                    return Err(StoreError::Conflict("the client id"));
                }
                Ok(())
            }

            async fn service_account(&self, client_id: &str) -> StoreResult<Option<ServiceAccount>> {
                Ok(sqlx::query_as(
                    "SELECT client_id, secret_hash, scope, disabled_at, created_at, rotated_at, public_jwk FROM service_accounts WHERE client_id = $1",
                )
                .bind(client_id)
                .fetch_optional(self.reader())
                .await?)
            }

            async fn set_service_secret(&self, client_id: &str, secret_hash: &str, now: i64, ban: Option<TokensBan<'_>>) -> StoreResult<bool> {
                change_service_credential!(self, "secret_hash", secret_hash, client_id, now, ban)
            }

            async fn upgrade_service_secret(&self, client_id: &str, verified: &str, new_hash: &str) -> StoreResult<bool> {
                // One statement: compared and replaced at once.
                let r = sqlx::query(
                    "UPDATE service_accounts SET secret_hash = $1 WHERE client_id = $2 AND secret_hash = $3 AND disabled_at IS NULL",
                )
                .bind(new_hash)
                .bind(client_id)
                .bind(verified)
                .execute(self.writer())
                .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn set_service_public_jwk(&self, client_id: &str, public_jwk: Option<&str>, now: i64, ban: Option<TokensBan<'_>>) -> StoreResult<bool> {
                change_service_credential!(self, "public_jwk", public_jwk, client_id, now, ban)
            }

            async fn take_client_assertion(&self, client_id: &str, jti: &str, expires_at: i64) -> StoreResult<bool> {
                // One statement: of two instances taking the same jti, one inserts.
                let r = sqlx::query(
                    "INSERT INTO client_assertion_jtis (client_id, jti, expires_at) VALUES ($1, $2, $3) ON CONFLICT (client_id, jti) DO NOTHING",
                )
                .bind(client_id)
                .bind(jti)
                .bind(expires_at)
                .execute(self.writer())
                .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn client_assertion_taken(&self, client_id: &str, jti: &str) -> StoreResult<bool> {
                // COUNT: a BIGINT on both backends (PostgreSQL's `SELECT 1` is an INT4).
                let taken: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM client_assertion_jtis WHERE client_id = $1 AND jti = $2")
                    .bind(client_id)
                    .bind(jti)
                    .fetch_one(self.writer())
                    .await?;
                Ok(taken > 0)
            }

            async fn disable_service_account(&self, client_id: &str, subject: &str, now: i64, expires_at: i64) -> StoreResult<bool> {
                let mut tx = self.begin_write().await?;
                let r = sqlx::query("UPDATE service_accounts SET disabled_at = $1 WHERE client_id = $2 AND disabled_at IS NULL")
                    .bind(now)
                    .bind(client_id)
                    .execute(&mut *tx)
                    .await?;
                if r.rows_affected() != 1 {
                    return Ok(false);
                }
                // Every token recorded for the account is visible here (record_service_token
                // orders itself against the update above); a disabled account gets no new
                // tokens, so nothing legitimate is issued after it.
                let _ = ban_service_tokens_in!(tx, subject, now, expires_at);
                tx.commit().await?;
                Ok(true)
            }

            async fn renew_epoch(&self, old: &str) -> StoreResult<String> {
                sqlx::query("UPDATE meta SET value = $1 WHERE key = 'feed_epoch' AND value = $2")
                    .bind(crate::domain::random_id())
                    .bind(old)
                    .execute(self.writer())
                    .await?;
                sqlx::query_scalar("SELECT value FROM meta WHERE key = 'feed_epoch'")
                    .fetch_one(self.writer())
                    .await
                    .map_err(StoreError::from)
            }

            async fn feed_events_after(&self, after: i64, forgotten_through: i64) -> StoreResult<Vec<FeedEvent>> {
                // Row by row: the whole list may take longer to come than a
                // wait for one answer may last (see `collect_while_answering`).
                let rows: Vec<EventRow> = $crate::store::collect_while_answering(sqlx::query_as(
                    "SELECT seq, kind, subject, not_before, expires_at FROM revocation_events WHERE seq > $1 AND expires_at > $2 ORDER BY seq",
                )
                .bind(after)
                .bind(forgotten_through)
                .fetch(self.reader()))
                .await?;
                Ok(rows.into_iter().map(FeedEvent::from).collect())
            }

            async fn remember_dpop_proof(&self, id_hash: &str, expires_at: i64) -> StoreResult<bool> {
                // The primary key decides between instances racing on one proof.
                let r = sqlx::query("INSERT INTO dpop_proofs (id_hash, expires_at) VALUES ($1, $2) ON CONFLICT (id_hash) DO NOTHING").bind(id_hash).bind(expires_at).execute(self.writer()).await?;
                Ok(r.rows_affected() == 1)
            }

            async fn signing_keys(&self) -> StoreResult<Vec<StoredKey>> {
                let rows: Vec<KeyRow> = sqlx::query_as(
                    "SELECT kid, alg, private_key, public_key, created_at, publish_at, active_at, retired_at, withdrawn_at FROM signing_keys ORDER BY active_at, created_at",
                )
                .fetch_all(self.writer())
                .await?;
                // A private half this KEK cannot open comes back marked, not as an error.
                Ok(rows.into_iter().map(|r| sealed::open_signing_key(&self.kek, r.into())).collect())
            }

            async fn set_signing_key_public(&self, kid: &str, public_key: &[u8]) -> StoreResult<()> {
                sqlx::query("UPDATE signing_keys SET public_key = $1 WHERE kid = $2")
                    .bind(public_key)
                    .bind(kid)
                    .execute(self.writer())
                    .await?;
                Ok(())
            }

            async fn prune_mail_budget(&self, before: i64) -> StoreResult<u64> {
                let r = sqlx::query(crate::store::maintenance::MAIL_BUDGET).bind(before).execute(self.writer()).await?;
                Ok(r.rows_affected())
            }

            async fn count_not_under_current_kek(&self) -> StoreResult<u64> {
                count_not_kept!(self, crate::store::sealed::Kept::new(&self.kek, &[])?)
            }

            async fn count_to_reseal(&self) -> StoreResult<u64> {
                count_not_kept!(self, kept_sealed!(self.writer(), self.kek))
            }

            async fn reseal_batch(&self, limit: u32) -> StoreResult<crate::store::ResealReport> {
                let mut report = crate::store::ResealReport::default();
                let kept = kept_sealed!(self.writer(), self.kek);
                let limit = i64::from(limit);
                let mut left = limit;
                for column in ["totp_secret", "totp_pending"] {
                    if left <= 0 {
                        break;
                    }
                    // Read without a lock; each write below replaces only the value read.
                    let sql = format!(
                        "SELECT id, {column} FROM users WHERE {column} IS NOT NULL AND {} ORDER BY id LIMIT $1",
                        kept.excluded(column, 2)
                    );
                    let mut query = sqlx::query_as(&sql).bind(left);
                    for pattern in kept.patterns() {
                        query = query.bind(pattern.as_str());
                    }
                    let rows: Vec<(String, String)> = query.fetch_all(self.writer()).await?;
                    left -= i64::try_from(rows.len()).unwrap_or(limit);
                    for (id, value) in rows {
                        let resealed = sealed::resealed(&self.kek, &kept, &totp_purpose(&id), value.as_bytes());
                        let Some(new) = report.to_write(resealed) else { continue };
                        let r = sqlx::query(&format!("UPDATE users SET {column} = $1 WHERE id = $2 AND {column} = $3"))
                            .bind(new)
                            .bind(&id)
                            .bind(&value)
                            .execute(self.writer())
                            .await?;
                        report.resealed += r.rows_affected();
                    }
                }
                if left > 0 {
                    let sql = format!(
                        "SELECT kid, private_key FROM signing_keys WHERE length(private_key) > 0 AND {} ORDER BY kid LIMIT $1",
                        kept.excluded("private_key", 2)
                    );
                    let mut query = sqlx::query_as(&sql).bind(left);
                    for pattern in kept.patterns() {
                        query = query.bind(pattern.as_bytes());
                    }
                    let rows: Vec<(String, Vec<u8>)> = query.fetch_all(self.writer()).await?;
                    for (kid, value) in rows {
                        let Some(new) = report.to_write(sealed::resealed(&self.kek, &kept, &key_purpose(&kid), &value)) else { continue };
                        let r = sqlx::query("UPDATE signing_keys SET private_key = $1 WHERE kid = $2 AND private_key = $3")
                            .bind(new.into_bytes())
                            .bind(&kid)
                            .bind(&value)
                            .execute(self.writer())
                            .await?;
                        report.resealed += r.rows_affected();
                    }
                }
                Ok(report)
            }

            async fn prune_sessions(&self, ended_before: i64) -> StoreResult<u64> {
                let r = sqlx::query(crate::store::maintenance::ENDED_SESSIONS)
                .bind(ended_before)
                .execute(self.writer())
                .await?;
                Ok(r.rows_affected())
            }

            async fn prune_audit(&self, before: i64) -> StoreResult<u64> {
                let r = sqlx::query(crate::store::maintenance::AUDIT).bind(before).execute(self.writer()).await?;
                Ok(r.rows_affected())
            }

            async fn prune_unverified_accounts(&self, before: i64, now: i64) -> StoreResult<u64> {
                use crate::store::maintenance::{UNVERIFIED_ACCOUNT, UNVERIFIED_ACCOUNTS, UNVERIFIED_ACCOUNT_ROWS};
                let mut tx = self.begin_write().await?;
                // Locked for the delete as found: a link mailed to the account
                // meanwhile waits for this transaction and then fails (no mail goes
                // out), one used meanwhile (a verification) keeps it (the delete
                // reads the row again).
                let ids: Vec<String> = sqlx::query_scalar(&format!("{UNVERIFIED_ACCOUNTS}{DELETE_LOCK}"))
                    .bind(before)
                    .bind(now)
                    .fetch_all(&mut *tx)
                    .await?;
                let mut deleted = 0;
                for id in &ids {
                    for sql in UNVERIFIED_ACCOUNT_ROWS {
                        sqlx::query(sql).bind(id).execute(&mut *tx).await?;
                    }
                    deleted += sqlx::query(UNVERIFIED_ACCOUNT).bind(id).execute(&mut *tx).await?.rows_affected();
                }
                tx.commit().await?;
                Ok(deleted)
            }

            async fn audit_page(&self, user_id: Option<&str>, page: &PageRequest<IdCursor>) -> StoreResult<Vec<AuditRow>> {
                // Two statements, not one with `($1 IS NULL OR user_id = $1)`: SQLite
                // (and a generic plan on Postgres) read that one through the whole
                // table, newest first, for a user with few rows.
                let query = match user_id {
                    Some(user_id) => sqlx::query_as(crate::store::by_user::AUDIT_OF_USER).bind(user_id),
                    None => sqlx::query_as(crate::store::by_user::AUDIT_NEWEST),
                };
                query
                    .bind(page.below())
                    .bind(i64::from(page.limit))
                    .fetch_all(self.reader())
                    .await
                    .map_err(StoreError::from)
            }

            async fn audit(&self, e: &AuditEntry) -> StoreResult<()> {
                self.audit_started(e).await.map(drop)
            }

            async fn audit_started(&self, e: &AuditEntry) -> StoreResult<i64> {
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO audit_log (at, event, outcome, user_id, email, ip, user_agent, detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
                )
                .bind(e.at)
                .bind(&e.event)
                .bind(&e.outcome)
                .bind(&e.user_id)
                .bind(&e.email)
                .bind(&e.ip)
                .bind(&e.user_agent)
                .bind(&e.detail)
                .fetch_one(self.writer())
                .await?;
                Ok(id)
            }

            async fn settle_audit(&self, id: i64, detail: &str) -> StoreResult<()> {
                sqlx::query("UPDATE audit_log SET detail = $1 WHERE id = $2")
                    .bind(detail)
                    .bind(id)
                    .execute(self.writer())
                    .await?;
                Ok(())
            }

            async fn session(&self, id: &str) -> StoreResult<Option<Session>> {
                let row: Option<Session> = sqlx::query_as(&format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(self.reader())
                    .await?;
                Ok(row)
            }

            async fn signed_in_on_device(&self, user_id: &str, device_secret_hash: &str, now: i64) -> StoreResult<bool> {
                // BIGINT: Postgres's plain `1` is an int4, which an i64 does not decode.
                let found: Option<i64> = sqlx::query_scalar(
                    "SELECT CAST(1 AS BIGINT) FROM sessions WHERE user_id = $1 AND device_secret_hash = $2 \
                     AND revoked_at IS NULL AND expires_at > $3 LIMIT 1",
                )
                .bind(user_id)
                .bind(device_secret_hash)
                .bind(now)
                .fetch_optional(self.reader())
                .await?;
                Ok(found.is_some())
            }

            async fn live_sessions_on_device(&self, device_secret_hash: &str, now: i64, limit: u32) -> StoreResult<Vec<Session>> {
                let rows: Vec<Session> = sqlx::query_as(&format!(
                    "SELECT {SESSION_COLUMNS} FROM sessions WHERE device_secret_hash = $1 AND revoked_at IS NULL \
                     AND expires_at > $2 ORDER BY created_at DESC, id DESC LIMIT $3"
                ))
                .bind(device_secret_hash)
                .bind(now)
                .bind(i64::from(limit))
                .fetch_all(self.reader())
                .await?;
                Ok(rows)
            }

            async fn live_sessions_of(&self, user_id: &str, now: i64, limit: u32) -> StoreResult<Vec<Session>> {
                let rows: Vec<Session> = sqlx::query_as(&format!(
                    "SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2 \
                     ORDER BY created_at DESC, id DESC LIMIT $3"
                ))
                .bind(user_id)
                .bind(now)
                .bind(i64::from(limit))
                .fetch_all(self.reader())
                .await?;
                Ok(rows)
            }

            async fn sessions_of(&self, user_id: &str, page: &PageRequest) -> StoreResult<Vec<Session>> {
                let (at, id) = page.before_descending();
                let rows: Vec<Session> = sqlx::query_as(&format!(
                    "SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = $1 AND (created_at, id) < ($2, $3) \
                     ORDER BY created_at DESC, id DESC LIMIT $4"
                ))
                .bind(user_id)
                .bind(at)
                .bind(id)
                .bind(i64::from(page.limit))
                .fetch_all(self.reader())
                    .await?;
                Ok(rows)
            }

            async fn ban_user(&self, user_id: &str, now: i64, expires_at: i64) -> StoreResult<bool> {
                let mut tx = self.begin_write().await?;
                let r = sqlx::query("UPDATE users SET banned_at = $1 WHERE id = $2 AND banned_at IS NULL")
                    .bind(now)
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
                if r.rows_affected() != 1 {
                    return Ok(false);
                }
                // Ending the sessions (one event each) kills their access tokens and makes
                // their refresh tokens useless for good; no session starts after this
                // (create_session checks the ban in its own transaction). The subject
                // event kills every access token issued up to `now`, those of the ban's
                // own second too (`iat` has whole seconds: not_before = now + 1, as for a
                // disabled service account).
                let ids: Vec<String> = sqlx::query_scalar(
                    "UPDATE sessions SET revoked_at = $1, revoke_reason = 'banned' WHERE user_id = $2 AND revoked_at IS NULL RETURNING id",
                )
                .bind(now)
                .bind(user_id)
                .fetch_all(&mut *tx)
                .await?;
                let published = sessions_still_verifiable!(tx, user_id, now, expires_at);
                let expires_at = expires_at.max(latest_token_expiry(&mut tx, user_id).await?);
                for id in ids.iter().filter(|id| published.contains(*id)) {
                    append_event(&mut tx, FeedKind::Session, id, None, expires_at, now).await?;
                }
                append_event(&mut tx, FeedKind::Subject, user_id, Some(now + 1), expires_at, now).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn prune(&self, now: i64) -> StoreResult<()> {
                // One statement per table, each committed on its own: nothing here
                // needs them together, and one transaction holding row locks in several
                // tables could deadlock on Postgres with a write that takes the same
                // rows in another order (a password reset: the user's links, then
                // their challenges).
                for sql in crate::store::maintenance::EXPIRED {
                    sqlx::query(sql).bind(now).execute(self.writer()).await?;
                }
                Ok(())
            }

            async fn reset_password(&self, hash: &str, password_hash: &str, now: i64, feed_expires_at: i64) -> StoreResult<Option<(String, Vec<String>)>> {
                let mut tx = self.begin_write().await?;
                // The user's row first (found through the token), under UPDATE_LOCK: two
                // resets of one user, with the same link or two, take turns here. Taking
                // their links' rows first, each would hold its own and wait for the
                // other's to use it up (a deadlock on Postgres, one of them aborted).
                let owner: Option<String> = sqlx::query_scalar(&format!(
                    "SELECT id FROM users WHERE id = (SELECT user_id FROM one_time_tokens WHERE hash = $1 AND purpose = $2){UPDATE_LOCK}"
                ))
                .bind(hash)
                .bind(TokenPurpose::ResetPassword.as_str())
                .fetch_optional(&mut *tx)
                .await?;
                if owner.is_none() {
                    return Ok(None);
                }
                // Read after the lock: a reset that went first has used this link up.
                let user_id: Option<String> = sqlx::query_scalar(
                    "UPDATE one_time_tokens SET used_at = $1 \
                     WHERE hash = $2 AND purpose = $3 AND used_at IS NULL AND expires_at > $1 RETURNING user_id",
                )
                .bind(now)
                .bind(hash)
                .bind(TokenPurpose::ResetPassword.as_str())
                .fetch_optional(&mut *tx)
                .await?;
                let Some(user_id) = user_id else { return Ok(None) };
                // A new version: no sign-in that checked the old password gets a session.
                // The link was mailed to the address, so using it proves control of the
                // mailbox: the address is verified (whoever began the account). An
                // authenticator enrolment left pending by a session of the old password
                // goes with it.
                sqlx::query(
                    "UPDATE users SET password_hash = $1, password_version = password_version + 1, email_verified = $2, \
                     totp_pending = NULL WHERE id = $3",
                )
                .bind(password_hash)
                .bind(true)
                .bind(&user_id)
                .execute(&mut *tx)
                .await?;
                // Without an authenticator the second factor is a code mailed to the
                // address this link just proved: whoever kept it locked did it with the
                // old password (or a session of it, which ends below), so the owner signs
                // in at once. With one, the link proves nothing about the authenticator:
                // its count and lock stay, or each reset would buy another round of
                // guesses to whoever holds the mailbox. The count of lockouts stays
                // either way, so the next lock is as long as the last. (The user's row
                // is locked above: no authenticator is confirmed in between.)
                sqlx::query(
                    "UPDATE second_factor_guard SET attempts = 0, locked_until = 0 \
                     WHERE user_id = $1 AND EXISTS (SELECT 1 FROM users WHERE id = $1 AND totp_secret IS NULL)",
                )
                .bind(&user_id)
                .execute(&mut *tx)
                .await?;
                // The new password closes every other way in the old one opened: the
                // user's other reset links, and sign-ins waiting for their code. Only
                // the live ones: the expired ones are the maintenance prune's, which
                // must find no row locked here in another order (a deadlock on Postgres).
                sqlx::query(crate::store::by_user::USE_UP_LINKS_FOR)
                    .bind(now)
                    .bind(&user_id)
                    .bind(TokenPurpose::ResetPassword.as_str())
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(crate::store::by_user::CONSUME_CHALLENGES)
                    .bind(now)
                    .bind(&user_id)
                    .execute(&mut *tx)
                    .await?;
                // And the sessions the old password opened end in the same commit: a
                // reset that took effect can never leave them alive (a crash, a
                // failed write after the commit).
                let ids = revoke_sessions_in!(tx, &user_id, "password_reset", now, feed_expires_at);
                tx.commit().await?;
                Ok(Some((user_id, ids)))
            }

            async fn claim_unverified_email(&self, user: &User, now: i64, feed_expires_at: i64) -> StoreResult<Option<String>> {
                let mut tx = self.begin_write().await?;
                let id: Option<String> = sqlx::query_scalar(&format!(
                    "SELECT id FROM users WHERE email = $1 AND email_verified = $2 AND banned_at IS NULL{UPDATE_LOCK}"
                ))
                .bind(&user.email)
                .bind(false)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(id) = id else { return Ok(None) };
                sqlx::query(
                    "UPDATE users SET password_hash = $1, password_version = password_version + 1, roles = $2, \
                     scope = $3, email_verified = $4, totp_secret = NULL, totp_pending = NULL WHERE id = $5",
                )
                .bind(&user.password_hash)
                .bind(user.roles.join(" "))
                .bind(&user.scope)
                .bind(true)
                .bind(&id)
                .execute(&mut *tx)
                .await?;
                sqlx::query(crate::store::by_user::USE_UP_LINKS)
                    .bind(now)
                    .bind(&id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(crate::store::by_user::CONSUME_CHALLENGES)
                    .bind(now)
                    .bind(&id)
                    .execute(&mut *tx)
                    .await?;
                let _ = revoke_sessions_in!(tx, &id, "claimed", now, feed_expires_at);
                tx.commit().await?;
                Ok(Some(id))
            }

            async fn confirm_email(&self, hash: &str, now: i64) -> StoreResult<Option<String>> {
                let mut tx = self.begin_write().await?;
                let user_id: Option<String> = sqlx::query_scalar(
                    "UPDATE one_time_tokens SET used_at = $1 \
                     WHERE hash = $2 AND purpose = $3 AND used_at IS NULL AND expires_at > $1 RETURNING user_id",
                )
                .bind(now)
                .bind(hash)
                .bind(TokenPurpose::VerifyEmail.as_str())
                .fetch_optional(&mut *tx)
                .await?;
                let Some(user_id) = user_id else { return Ok(None) };
                // The link and the flag commit together, or neither (the link stays usable).
                sqlx::query("UPDATE users SET email_verified = $1 WHERE id = $2")
                    .bind(true)
                    .bind(&user_id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(Some(user_id))
            }

            async fn take_one_time_token(&self, hash: &str, purpose: TokenPurpose, now: i64) -> StoreResult<Option<String>> {
                // On Postgres a concurrent taker waits on the row lock, then re-checks `used_at IS NULL`: one wins.
                sqlx::query_scalar(
                    "UPDATE one_time_tokens SET used_at = $1 \
                     WHERE hash = $2 AND purpose = $3 AND used_at IS NULL AND expires_at > $1 RETURNING user_id",
                )
                .bind(now)
                .bind(hash)
                .bind(purpose.as_str())
                .fetch_optional(self.writer())
                .await
                .map_err(StoreError::from)
            }

            async fn rotate_refresh(&self, old_hash: &str, new: &RefreshRecord, access: &IssuedToken, now: i64, limit: RefreshLimit, bind_to: Option<&str>) -> StoreResult<Rotation> {
                let mut tx = self.begin_write().await?;
                // The session first (the order a revocation locks in): a logout that
                // committed since the session was read ends the rotation here. On
                // Postgres this waits for a revocation in progress and re-checks.
                // An unbound session is bound to `bind_to` (a bound one keeps its key).
                let live = sqlx::query(
                    "UPDATE sessions SET last_seen_at = $1, \
                     dpop_bound_at = CASE WHEN dpop_jkt IS NULL AND $3 IS NOT NULL THEN $1 ELSE dpop_bound_at END, \
                     dpop_jkt = COALESCE(dpop_jkt, $3) \
                     WHERE id = $2 AND revoked_at IS NULL AND expires_at > $1",
                )
                    .bind(now)
                    .bind(&new.session_id)
                    .bind(bind_to)
                    .execute(&mut *tx)
                    .await?;
                if live.rows_affected() != 1 {
                    return Ok(Rotation::SessionEnded);
                }
                // Two instances presenting the same token (Postgres): the second waits on the row
                // lock, re-checks `used_at IS NULL` after the first commits, and loses.
                let used = sqlx::query("UPDATE refresh_tokens SET used_at = $1 WHERE hash = $2 AND used_at IS NULL")
                    .bind(now)
                    .bind(old_hash)
                    .execute(&mut *tx)
                    .await?;
                if used.rows_affected() != 1 {
                    return Ok(Rotation::AlreadyUsed);
                }
                // The per-session limit, after the reuse check (a second use of a token
                // is judged as such, throttled or not), counted from the session's kept
                // rotations, this one included: past the limit, the rotation that is
                // `max_per_window` older than this one says when the window has room.
                // The session's row is locked by now (Postgres; SQLite writes one at a
                // time): rotations of one session on any instance count in turn. On
                // refusal the transaction is dropped, the token left unused.
                let window_start = now.saturating_sub(limit.window_secs);
                let oldest_counted: Option<i64> = sqlx::query_scalar(
                    "SELECT used_at FROM refresh_tokens WHERE session_id = $1 AND used_at > $2 \
                     ORDER BY used_at DESC LIMIT 1 OFFSET $3",
                )
                .bind(&new.session_id)
                .bind(window_start)
                .bind(i64::from(limit.max_per_window))
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(at) = oldest_counted {
                    return Ok(Rotation::Throttled(at.saturating_add(limit.window_secs).max(now + 1)));
                }
                sqlx::query("INSERT INTO refresh_tokens (hash, session_id, created_at, expires_at, dpop_bound) VALUES ($1, $2, $3, $4, $5)")
                    .bind(&new.hash)
                    .bind(&new.session_id)
                    .bind(new.created_at)
                    .bind(new.expires_at)
                    .bind(new.dpop_bound)
                    .execute(&mut *tx)
                    .await?;
                // Rotated-out tokens are kept for reuse detection, but only the newest
                // ones: before, every one stayed for the session's whole life, and a
                // client refreshing in a loop grew the table a row per request.
                sqlx::query(
                    "DELETE FROM refresh_tokens WHERE session_id = $1 AND used_at IS NOT NULL AND hash NOT IN \
                     (SELECT hash FROM refresh_tokens WHERE session_id = $1 AND used_at IS NOT NULL \
                      ORDER BY used_at DESC, created_at DESC, hash DESC LIMIT $2)",
                )
                .bind(&new.session_id)
                .bind(i64::from(ROTATED_REFRESH_TOKENS_KEPT))
                .execute(&mut *tx)
                .await?;
                // The access token answered with the new refresh token, in the same
                // commit: a failure (or crash) before it leaves the old token unused
                // rather than rotated with no client holding its successor.
                insert_access_token!(&mut *tx, access);
                tx.commit().await?;
                Ok(Rotation::Rotated)
            }
        }
    };
}

pub(super) use {
    authenticator_in, ban_service_tokens_in, change_service_credential, count_not_kept,
    end_sessions_past_cap_in, impl_store, insert_access_token, insert_signing_key_in, kept_sealed,
    published_keys_in, record_kek_in_use, revoke_sessions_in, session_event_in,
    sessions_still_verifiable, withdraw_key_in,
};

/// A service account's credentials changed at `$2`: `rotated_at` moves on,
/// always forward (two changes in one second too), since a token request
/// is recorded only under the `rotated_at` its credentials were checked at.
pub(super) const NEXT_ROTATION: &str =
    "rotated_at = CASE WHEN rotated_at >= $2 THEN rotated_at + 1 ELSE $2 END";
