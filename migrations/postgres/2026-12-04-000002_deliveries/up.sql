-- The outbox: one row per event to deliver, written before PublishEvent returns.
CREATE TABLE deliveries (
    id TEXT PRIMARY KEY NOT NULL,
    account_id BIGINT NOT NULL REFERENCES accounts (id),
    ai_interview_id BIGINT NOT NULL,
    event TEXT NOT NULL,
    payload TEXT NOT NULL,
    idempotency_key TEXT,
    state TEXT NOT NULL,
    attempt_count BIGINT NOT NULL DEFAULT 0,
    schedule_step BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    lease_owner TEXT,
    lease_expires_at BIGINT,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE UNIQUE INDEX deliveries_idempotency_key
    ON deliveries (account_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX deliveries_due ON deliveries (state, next_attempt_at);
CREATE INDEX deliveries_by_interview ON deliveries (account_id, ai_interview_id, created_at);

CREATE TABLE delivery_attempts (
    id BIGSERIAL PRIMARY KEY,
    delivery_id TEXT NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    attempted_at BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    http_status INTEGER,
    error TEXT,
    response_body TEXT
);

CREATE INDEX delivery_attempts_by_delivery ON delivery_attempts (delivery_id, attempted_at);

-- Why a webhook was switched off by delivery (a 410 Gone from the receiver).
ALTER TABLE webhook_settings ADD COLUMN start_disabled_reason TEXT;
ALTER TABLE webhook_settings ADD COLUMN submission_disabled_reason TEXT;
