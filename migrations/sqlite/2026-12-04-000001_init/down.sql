DROP TABLE webhook_settings;
DROP TABLE api_keys;
DROP TABLE accounts;
