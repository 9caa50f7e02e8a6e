-- 0005: one writer per project across nodes.
--
-- nodes: every running Collab node (process) renews its row; a node whose
-- expires_at has passed is presumed dead. projects.owner_node is the node
-- hosting the project's actor; owner_epoch grows at every change of owner
-- and fences commits: a node commits only while the epoch it acquired is
-- current, so an owner that was paused or cut off can never commit after
-- another node took over.

CREATE TABLE nodes (
    node_id     TEXT PRIMARY KEY,
    started_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at  TIMESTAMPTZ NOT NULL,
    CONSTRAINT nodes_node_id_length CHECK (char_length(node_id) BETWEEN 1 AND 64)
);

ALTER TABLE projects ADD COLUMN owner_node TEXT;
ALTER TABLE projects ADD COLUMN owner_epoch BIGINT NOT NULL DEFAULT 0;
CREATE INDEX idx_projects_owner_node ON projects (owner_node) WHERE owner_node IS NOT NULL;
