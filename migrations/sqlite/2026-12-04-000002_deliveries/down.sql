ALTER TABLE webhook_settings DROP COLUMN submission_disabled_reason;
ALTER TABLE webhook_settings DROP COLUMN start_disabled_reason;
DROP TABLE delivery_attempts;
DROP TABLE deliveries;
