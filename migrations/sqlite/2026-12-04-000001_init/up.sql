-- Accounts own API keys and webhook settings. Times are Unix milliseconds (portable).
CREATE TABLE accounts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

-- Only the SHA-256 of each key's secret part is stored.
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY NOT NULL,
    account_id BIGINT NOT NULL REFERENCES accounts (id),
    secret_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);

CREATE TABLE webhook_settings (
    account_id BIGINT NOT NULL REFERENCES accounts (id),
    ai_interview_id BIGINT NOT NULL,
    start_status BOOLEAN,
    start_url TEXT,
    submission_status BOOLEAN,
    submission_url TEXT,
    auth_type TEXT,
    auth_status BOOLEAN NOT NULL DEFAULT TRUE,
    apikey_key TEXT,
    apikey_value TEXT,
    basic_username TEXT,
    basic_password TEXT,
    signing_secret TEXT NOT NULL,
    signing_secret_created_at BIGINT NOT NULL,
    previous_signing_secret TEXT,
    previous_secret_expires_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (account_id, ai_interview_id)
);
