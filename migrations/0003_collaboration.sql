-- 0003: collaboration tables: task_comments, task_attachments, notifications,
-- activity_log, and idempotency_keys (REST Idempotency-Key replay store).
-- The migrations runner wraps this file in one transaction.

CREATE TABLE task_comments (
    id         UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    task_id    UUID NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    user_id    UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    content    TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT task_comments_content_length CHECK (char_length(content) BETWEEN 1 AND 10000)
);

CREATE INDEX idx_task_comments_task_id ON task_comments (task_id);
CREATE INDEX idx_task_comments_user_id ON task_comments (user_id);


-- uploaded_by is NOT NULL with no ON DELETE action, as in the seed: users
-- are deactivated, never deleted.
CREATE TABLE task_attachments (
    id           UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    task_id      UUID NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    filename     TEXT NOT NULL,
    -- legacy seed column, kept nullable for compatibility; use storage_key
    file_path    TEXT,
    file_size    BIGINT NOT NULL,
    mime_type    TEXT,
    -- sha256 hex of the file content
    content_hash TEXT NOT NULL,
    -- key of the blob in the storage backend
    storage_key  TEXT NOT NULL,
    uploaded_by  UUID NOT NULL REFERENCES users (id),
    uploaded_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT task_attachments_filename_length    CHECK (char_length(filename) BETWEEN 1 AND 255),
    CONSTRAINT task_attachments_file_size_nonneg   CHECK (file_size >= 0),
    CONSTRAINT task_attachments_mime_type_length   CHECK (char_length(mime_type) <= 100),
    CONSTRAINT task_attachments_storage_key_length CHECK (char_length(storage_key) BETWEEN 1 AND 1024)
);

CREATE INDEX idx_task_attachments_task_id ON task_attachments (task_id);


-- project_id has no FK on purpose: a notification about a project (for
-- example "project deleted") outlives the project.
CREATE TABLE notifications (
    id          UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id     UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    project_id  UUID,
    title       TEXT NOT NULL,
    message     TEXT NOT NULL,
    type        TEXT NOT NULL,
    entity_type TEXT,
    entity_id   UUID,
    is_read     BOOLEAN NOT NULL DEFAULT false,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT notifications_title_length       CHECK (char_length(title) BETWEEN 1 AND 255),
    CONSTRAINT notifications_type_length        CHECK (char_length(type) BETWEEN 1 AND 50),
    CONSTRAINT notifications_entity_type_length CHECK (char_length(entity_type) <= 50)
);

CREATE INDEX idx_notifications_user_id    ON notifications (user_id);
CREATE INDEX idx_notifications_is_read    ON notifications (is_read);
CREATE INDEX idx_notifications_created_at ON notifications (created_at);
CREATE INDEX idx_notifications_inbox      ON notifications (user_id, is_read, created_at DESC);


-- Audit trail. user_id is nullable (SET NULL) so entries outlive users;
-- project_id has no FK so entries outlive projects; seq is the project
-- event seq the entry belongs to, when there is one.
CREATE TABLE activity_log (
    id          UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id     UUID REFERENCES users (id) ON DELETE SET NULL,
    project_id  UUID,
    seq         BIGINT,
    action      TEXT NOT NULL,
    entity_type TEXT NOT NULL,
    entity_id   UUID NOT NULL,
    details     JSONB,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT activity_log_action_length      CHECK (char_length(action) BETWEEN 1 AND 100),
    CONSTRAINT activity_log_entity_type_length CHECK (char_length(entity_type) BETWEEN 1 AND 50)
);

CREATE INDEX idx_activity_log_user_id    ON activity_log (user_id);
CREATE INDEX idx_activity_log_entity     ON activity_log (entity_type, entity_id);
CREATE INDEX idx_activity_log_created_at ON activity_log (created_at);
CREATE INDEX idx_activity_log_project    ON activity_log (project_id, seq) WHERE project_id IS NOT NULL;


-- REST Idempotency-Key store. status/response stay NULL while the first
-- request is in flight; a retry with a different request_hash is rejected.
CREATE TABLE idempotency_keys (
    user_id          UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key              TEXT NOT NULL,
    request_hash     TEXT NOT NULL,
    status           INTEGER,
    response         JSONB,
    response_headers JSONB,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key),
    CONSTRAINT idempotency_keys_key_length   CHECK (char_length(key) BETWEEN 1 AND 255),
    CONSTRAINT idempotency_keys_status_range CHECK (status BETWEEN 100 AND 599)
);

-- expiry: delete keys older than the retention window
CREATE INDEX idx_idempotency_keys_created_at ON idempotency_keys (created_at);
