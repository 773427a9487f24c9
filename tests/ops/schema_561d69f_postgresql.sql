-- The schema exactly as `Base.metadata.create_all` made it on PostgreSQL at commit 561d69f (before
-- migrations existed), compiled from the models of that commit. tests/ops/test_migrations.py upgrades
-- a database made from this file, with data in it, to head.

CREATE TABLE launch (
	id VARCHAR(64) NOT NULL,
	state VARCHAR(128) NOT NULL,
	browser_id VARCHAR(64) NOT NULL,
	iss VARCHAR(512) NOT NULL,
	kind VARCHAR(16) NOT NULL,
	status VARCHAR(16) NOT NULL,
	created_at TIMESTAMP WITH TIME ZONE NOT NULL,
	expires_at TIMESTAMP WITH TIME ZONE NOT NULL,
	pending_enc BYTEA,
	tokens_enc BYTEA,
	context_enc BYTEA,
	data_enc BYTEA,
	error TEXT,
	PRIMARY KEY (id)
);
CREATE INDEX ix_launch_browser_id ON launch (browser_id);
CREATE INDEX ix_launch_expires ON launch (expires_at);
CREATE UNIQUE INDEX ix_launch_state ON launch (state);

CREATE TABLE referral (
	id VARCHAR(64) NOT NULL,
	launch_id VARCHAR(64),
	iss VARCHAR(512) NOT NULL,
	profile VARCHAR(64) NOT NULL,
	site VARCHAR(64),
	urgent BOOLEAN NOT NULL,
	status VARCHAR(16) NOT NULL,
	status_by VARCHAR(256),
	status_at TIMESTAMP WITH TIME ZONE,
	created_at TIMESTAMP WITH TIME ZONE NOT NULL,
	summary_enc BYTEA,
	PRIMARY KEY (id)
);
CREATE INDEX ix_referral_launch_id ON referral (launch_id);
CREATE INDEX ix_referral_status_created ON referral (status, created_at);

CREATE TABLE used_code (
	code_hash VARCHAR(64) NOT NULL,
	used_at TIMESTAMP WITH TIME ZONE NOT NULL,
	PRIMARY KEY (code_hash)
);

CREATE TABLE used_jti (
	jti VARCHAR(64) NOT NULL,
	used_at TIMESTAMP WITH TIME ZONE NOT NULL,
	PRIMARY KEY (jti)
);

CREATE TABLE outbox (
	id SERIAL NOT NULL,
	referral_id VARCHAR(64) NOT NULL,
	launch_id VARCHAR(64),
	iss VARCHAR(512) NOT NULL,
	profile VARCHAR(64) NOT NULL,
	mode VARCHAR(16) NOT NULL,
	kind VARCHAR(64) NOT NULL,
	identifier_system VARCHAR(256) NOT NULL,
	identifier_value VARCHAR(256) NOT NULL,
	full_url VARCHAR(128) NOT NULL,
	depends_on TEXT NOT NULL,
	resource_enc BYTEA NOT NULL,
	status VARCHAR(16) NOT NULL,
	attempts INTEGER NOT NULL,
	max_attempts INTEGER NOT NULL,
	final_retry BOOLEAN NOT NULL,
	next_attempt_at TIMESTAMP WITH TIME ZONE NOT NULL,
	claimed_by VARCHAR(64),
	lease_until TIMESTAMP WITH TIME ZONE,
	last_status INTEGER,
	last_error TEXT,
	server_id VARCHAR(128),
	server_version VARCHAR(64),
	label_status VARCHAR(16),
	label_detail TEXT,
	created_at TIMESTAMP WITH TIME ZONE NOT NULL,
	updated_at TIMESTAMP WITH TIME ZONE NOT NULL,
	written_at TIMESTAMP WITH TIME ZONE,
	PRIMARY KEY (id),
	CONSTRAINT uq_outbox_identifier UNIQUE (identifier_system, identifier_value),
	FOREIGN KEY(referral_id) REFERENCES referral (id)
);
CREATE INDEX ix_outbox_due ON outbox (status, next_attempt_at);
CREATE INDEX ix_outbox_referral_id ON outbox (referral_id);

CREATE TABLE referral_event (
	id SERIAL NOT NULL,
	referral_id VARCHAR(64) NOT NULL,
	from_status VARCHAR(16),
	to_status VARCHAR(16) NOT NULL,
	by_reference VARCHAR(256),
	by_name_enc BYTEA,
	at TIMESTAMP WITH TIME ZONE NOT NULL,
	PRIMARY KEY (id),
	FOREIGN KEY(referral_id) REFERENCES referral (id)
);
CREATE INDEX ix_referral_event_referral_id ON referral_event (referral_id);
