-- Mails an anonymous client can trigger, counted per recipient (a hash of the
-- address) and per client address in fixed one-hour windows.
CREATE TABLE mail_budget (
    key          TEXT PRIMARY KEY,   -- `to:<sha256 of the address>` or `ip:<client address>`
    window_start INTEGER NOT NULL,
    sent         INTEGER NOT NULL
);
