-- 0002: projects (with the committed-event counter seq), project_members,
-- project_events (the durable ordered change log) and tasks (with version,
-- fractional position and a generated full-text search column).
-- The migrations runner wraps this file in one transaction.

CREATE TABLE projects (
    id           UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    name         TEXT NOT NULL,
    description  TEXT,
    owner_id     UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    status       TEXT NOT NULL DEFAULT 'active',
    priority     TEXT NOT NULL DEFAULT 'medium',
    start_date   DATE,
    due_date     DATE,
    completed_at TIMESTAMPTZ,
    -- last committed event number; advanced only with the fence
    -- UPDATE projects SET seq = $new WHERE id = $id AND seq = $expected
    seq          BIGINT NOT NULL DEFAULT 0,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT projects_name_length        CHECK (char_length(name) BETWEEN 1 AND 200),
    CONSTRAINT projects_description_length CHECK (char_length(description) <= 10000),
    CONSTRAINT projects_status_valid       CHECK (status IN ('active', 'on_hold', 'completed', 'archived')),
    CONSTRAINT projects_priority_valid     CHECK (priority IN ('low', 'medium', 'high', 'urgent')),
    CONSTRAINT projects_seq_nonneg         CHECK (seq >= 0)
);

CREATE INDEX idx_projects_owner_id   ON projects (owner_id);
CREATE INDEX idx_projects_status     ON projects (status);
CREATE INDEX idx_projects_created_at ON projects (created_at);


CREATE TABLE project_members (
    project_id UUID NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    user_id    UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role       TEXT NOT NULL DEFAULT 'member',
    joined_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, user_id),
    CONSTRAINT project_members_role_valid CHECK (role IN ('owner', 'manager', 'member', 'viewer'))
);

CREATE INDEX idx_project_members_user_id ON project_members (user_id);


-- The durable, ordered change log of a project. Drives WebSocket catch-up,
-- GET /projects/{id}/changes?since=, the activity feed and ETags.
CREATE TABLE project_events (
    project_id   UUID NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    seq          BIGINT NOT NULL,
    kind         TEXT NOT NULL,
    -- no FK: a task's events outlive the task
    task_id      UUID,
    actor_id     UUID REFERENCES users (id) ON DELETE SET NULL,
    -- client op id for exactly-once WebSocket ops; NULLs never conflict
    client_op_id TEXT,
    payload      JSONB NOT NULL DEFAULT '{}',
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, seq),
    CONSTRAINT project_events_op_unique UNIQUE (project_id, actor_id, client_op_id),
    CONSTRAINT project_events_seq_positive       CHECK (seq > 0),
    CONSTRAINT project_events_kind_length        CHECK (char_length(kind) BETWEEN 1 AND 64),
    CONSTRAINT project_events_client_op_id_length CHECK (char_length(client_op_id) BETWEEN 1 AND 64)
);

-- retention: delete events older than the window
CREATE INDEX idx_project_events_created_at ON project_events (created_at);


-- tasks.created_by is NOT NULL with no ON DELETE action, as in the seed
-- (ON DELETE SET NULL is impossible on a NOT NULL column). Users are
-- deactivated, never deleted, so this reference never blocks anything.
CREATE TABLE tasks (
    id              UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    title           TEXT NOT NULL,
    description     TEXT,
    project_id      UUID NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    assignee_id     UUID REFERENCES users (id) ON DELETE SET NULL,
    created_by      UUID NOT NULL REFERENCES users (id),
    status          TEXT NOT NULL DEFAULT 'todo',
    priority        TEXT NOT NULL DEFAULT 'medium',
    due_date        TIMESTAMPTZ,
    completed_at    TIMESTAMPTZ,
    estimated_hours INTEGER,
    actual_hours    INTEGER,
    tags            TEXT[] NOT NULL DEFAULT '{}',
    -- project seq of the task's last change
    version         BIGINT NOT NULL DEFAULT 0,
    -- fractional index inside a status column; the column collation is "C"
    -- so ORDER BY / comparisons are bytewise without spelling COLLATE
    position        TEXT COLLATE "C" NOT NULL DEFAULT 'a0',
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    search          TSVECTOR GENERATED ALWAYS AS (
                        setweight(to_tsvector('simple', coalesce(title, '')), 'A') ||
                        setweight(to_tsvector('simple', coalesce(description, '')), 'B')
                    ) STORED,
    CONSTRAINT tasks_title_length       CHECK (char_length(title) BETWEEN 1 AND 200),
    CONSTRAINT tasks_description_length CHECK (char_length(description) <= 20000),
    CONSTRAINT tasks_status_valid       CHECK (status IN ('todo', 'in_progress', 'in_review', 'done', 'cancelled')),
    CONSTRAINT tasks_priority_valid     CHECK (priority IN ('low', 'medium', 'high', 'urgent')),
    CONSTRAINT tasks_estimated_hours_range CHECK (estimated_hours BETWEEN 0 AND 100000),
    CONSTRAINT tasks_actual_hours_range    CHECK (actual_hours BETWEEN 0 AND 100000),
    CONSTRAINT tasks_tags_count         CHECK (cardinality(tags) <= 20),
    CONSTRAINT tasks_tags_no_nulls      CHECK (array_position(tags, NULL) IS NULL),
    CONSTRAINT tasks_version_nonneg     CHECK (version >= 0),
    CONSTRAINT tasks_position_length    CHECK (char_length(position) BETWEEN 1 AND 1024)
);

CREATE INDEX idx_tasks_project_id  ON tasks (project_id);
CREATE INDEX idx_tasks_assignee_id ON tasks (assignee_id);
CREATE INDEX idx_tasks_created_by  ON tasks (created_by);
CREATE INDEX idx_tasks_status      ON tasks (status);
CREATE INDEX idx_tasks_due_date    ON tasks (due_date);
CREATE INDEX idx_tasks_created_at  ON tasks (created_at);
CREATE INDEX idx_tasks_board       ON tasks (project_id, status, position COLLATE "C");
CREATE INDEX idx_tasks_search      ON tasks USING GIN (search);
CREATE INDEX idx_tasks_tags        ON tasks USING GIN (tags);
