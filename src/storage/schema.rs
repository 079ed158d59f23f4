//! Diesel table definitions, written to match both `migrations/sqlite` and
//! `migrations/postgres` (portable types only: BIGINT, TEXT, BOOLEAN; times in Unix ms).

diesel::table! {
    accounts (id) {
        id -> BigInt,
        name -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    api_keys (id) {
        id -> Text,
        account_id -> BigInt,
        secret_hash -> Text,
        created_at -> BigInt,
        revoked_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    webhook_settings (account_id, ai_interview_id) {
        account_id -> BigInt,
        ai_interview_id -> BigInt,
        start_status -> Nullable<Bool>,
        start_url -> Nullable<Text>,
        submission_status -> Nullable<Bool>,
        submission_url -> Nullable<Text>,
        auth_type -> Nullable<Text>,
        auth_status -> Bool,
        apikey_key -> Nullable<Text>,
        apikey_value -> Nullable<Text>,
        basic_username -> Nullable<Text>,
        basic_password -> Nullable<Text>,
        signing_secret -> Text,
        signing_secret_created_at -> BigInt,
        previous_signing_secret -> Nullable<Text>,
        previous_secret_expires_at -> Nullable<BigInt>,
        created_at -> BigInt,
        updated_at -> BigInt,
        start_disabled_reason -> Nullable<Text>,
        submission_disabled_reason -> Nullable<Text>,
    }
}

diesel::table! {
    deliveries (id) {
        id -> Text,
        account_id -> BigInt,
        ai_interview_id -> BigInt,
        event -> Text,
        payload -> Text,
        idempotency_key -> Nullable<Text>,
        state -> Text,
        attempt_count -> BigInt,
        schedule_step -> BigInt,
        next_attempt_at -> BigInt,
        lease_owner -> Nullable<Text>,
        lease_expires_at -> Nullable<BigInt>,
        last_error -> Nullable<Text>,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    delivery_attempts (id) {
        id -> BigInt,
        delivery_id -> Text,
        attempted_at -> BigInt,
        duration_ms -> BigInt,
        http_status -> Nullable<Integer>,
        error -> Nullable<Text>,
        response_body -> Nullable<Text>,
    }
}

diesel::joinable!(delivery_attempts -> deliveries (delivery_id));
diesel::joinable!(api_keys -> accounts (account_id));
diesel::joinable!(webhook_settings -> accounts (account_id));
diesel::allow_tables_to_appear_in_same_query!(
    accounts,
    api_keys,
    webhook_settings,
    deliveries,
    delivery_attempts,
);
