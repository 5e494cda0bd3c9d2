-- The sessions a browser's device cookie is bound to, of whichever user: a
-- sign-in from that browser ends them (`sessions::end_replaced`) through this
-- index, not a scan.
CREATE INDEX sessions_by_device ON sessions(device_secret_hash);
