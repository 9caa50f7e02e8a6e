-- 0006: "is this content still referenced?" (attachment cleanup) without a table scan.
CREATE INDEX idx_task_attachments_content_hash ON task_attachments (content_hash);
