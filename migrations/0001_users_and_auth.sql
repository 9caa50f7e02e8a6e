-- 0001: users, login sessions (refresh-token families), roles, permissions,
-- role_permissions, user_roles, and the seed roles/permissions/grants.
-- Carried over from the seed schema with CHECK constraints added.
-- No extensions: ids use the built-in gen_random_uuid() (PostgreSQL 13+).
-- The migrations runner wraps this file in one transaction.
--
-- Users are deactivated (is_active = false), never deleted: some references
-- to users (tasks.created_by, task_attachments.uploaded_by) are NOT NULL with
-- no ON DELETE action and would block a DELETE, as in the seed.

CREATE TABLE users (
    id                  UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    -- stored lowercase; uniqueness on email is therefore case-insensitive
    email               TEXT NOT NULL UNIQUE,
    username            TEXT NOT NULL,
    password_hash       TEXT NOT NULL,
    first_name          TEXT,
    last_name           TEXT,
    avatar_url          TEXT,
    is_active           BOOLEAN NOT NULL DEFAULT true,
    email_verified      BOOLEAN NOT NULL DEFAULT false,
    -- tokens issued before this instant are invalid
    password_changed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT users_email_length    CHECK (char_length(email) BETWEEN 1 AND 254),
    CONSTRAINT users_email_lowercase CHECK (email = lower(email)),
    CONSTRAINT users_username_format CHECK (char_length(username) BETWEEN 3 AND 32
                                            AND username ~ '^[A-Za-z0-9_.-]+$'),
    CONSTRAINT users_first_name_length CHECK (char_length(first_name) <= 100),
    CONSTRAINT users_last_name_length  CHECK (char_length(last_name) <= 100),
    CONSTRAINT users_avatar_url_length CHECK (char_length(avatar_url) <= 2048)
);

-- Usernames keep their case for display but are unique case-insensitively.
-- This replaces the seed's plain UNIQUE (username), which it implies.
CREATE UNIQUE INDEX users_username_lower_key ON users (lower(username));

-- Seed indexes idx_users_email and idx_users_username are dropped: they
-- duplicate the UNIQUE index on email and the unique lower(username) index.
CREATE INDEX idx_users_created_at ON users (created_at);


-- One row = one login session = one refresh-token family.
CREATE TABLE user_sessions (
    id                 UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id            UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- sha256 hex of the jti of the family's current refresh token
    token_hash         TEXT NOT NULL UNIQUE,
    -- bumped on every refresh; presenting an older token = reuse
    refresh_generation INTEGER NOT NULL DEFAULT 0,
    expires_at         TIMESTAMPTZ NOT NULL,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_used_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    user_agent         TEXT,
    ip_address         INET,
    revoked_at         TIMESTAMPTZ,
    revoked_reason     TEXT,
    CONSTRAINT user_sessions_refresh_generation_nonneg CHECK (refresh_generation >= 0),
    CONSTRAINT user_sessions_user_agent_length CHECK (char_length(user_agent) <= 512),
    CONSTRAINT user_sessions_revoked_reason_valid CHECK (revoked_reason IN
        ('logout', 'revoked', 'reuse_detected', 'password_changed', 'deactivated', 'expired')),
    CONSTRAINT user_sessions_reason_needs_revoked_at CHECK (revoked_reason IS NULL OR revoked_at IS NOT NULL)
);

-- Seed index idx_user_sessions_token_hash is dropped: the UNIQUE constraint
-- on token_hash already provides that index.
-- Full index on user_id kept from the seed (serves ON DELETE CASCADE and
-- "list all sessions"); the partial one serves "active sessions of a user".
CREATE INDEX idx_user_sessions_user_id     ON user_sessions (user_id);
CREATE INDEX idx_user_sessions_user_active ON user_sessions (user_id) WHERE revoked_at IS NULL;
CREATE INDEX idx_user_sessions_expires_at  ON user_sessions (expires_at);


CREATE TABLE roles (
    id          UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    name        TEXT NOT NULL UNIQUE,
    description TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT roles_name_length CHECK (char_length(name) BETWEEN 1 AND 50)
);

CREATE TABLE permissions (
    id          UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    name        TEXT NOT NULL UNIQUE,
    description TEXT,
    resource    TEXT NOT NULL,
    action      TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT permissions_name_length     CHECK (char_length(name) BETWEEN 1 AND 100),
    CONSTRAINT permissions_resource_length CHECK (char_length(resource) BETWEEN 1 AND 100),
    CONSTRAINT permissions_action_length   CHECK (char_length(action) BETWEEN 1 AND 50)
);

CREATE TABLE role_permissions (
    role_id       UUID NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    permission_id UUID NOT NULL REFERENCES permissions (id) ON DELETE CASCADE,
    PRIMARY KEY (role_id, permission_id)
);

CREATE TABLE user_roles (
    user_id    UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role_id    UUID NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    granted_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- nullable, so SET NULL instead of the seed's blocking reference
    granted_by UUID REFERENCES users (id) ON DELETE SET NULL,
    PRIMARY KEY (user_id, role_id)
);


-- Seed data: default roles
INSERT INTO roles (name, description) VALUES
    ('admin', 'System administrator with full access'),
    ('manager', 'Project manager with enhanced permissions'),
    ('developer', 'Developer with standard permissions'),
    ('viewer', 'Read-only access to assigned projects');

-- Seed data: basic permissions
INSERT INTO permissions (name, description, resource, action) VALUES
    ('users.read', 'Read user information', 'users', 'read'),
    ('users.write', 'Create and update users', 'users', 'write'),
    ('users.delete', 'Delete users', 'users', 'delete'),
    ('projects.read', 'Read project information', 'projects', 'read'),
    ('projects.write', 'Create and update projects', 'projects', 'write'),
    ('projects.delete', 'Delete projects', 'projects', 'delete'),
    ('tasks.read', 'Read task information', 'tasks', 'read'),
    ('tasks.write', 'Create and update tasks', 'tasks', 'write'),
    ('tasks.delete', 'Delete tasks', 'tasks', 'delete'),
    ('admin.access', 'Access admin features', 'admin', 'access');

-- Admin gets all permissions
INSERT INTO role_permissions (role_id, permission_id)
SELECT r.id, p.id FROM roles r CROSS JOIN permissions p
WHERE r.name = 'admin';

-- Manager gets project and task permissions
INSERT INTO role_permissions (role_id, permission_id)
SELECT r.id, p.id FROM roles r CROSS JOIN permissions p
WHERE r.name = 'manager' AND p.resource IN ('projects', 'tasks');

-- Developer gets read/write for tasks, read for projects
INSERT INTO role_permissions (role_id, permission_id)
SELECT r.id, p.id FROM roles r CROSS JOIN permissions p
WHERE r.name = 'developer' AND (
    (p.resource = 'tasks' AND p.action IN ('read', 'write')) OR
    (p.resource = 'projects' AND p.action = 'read')
);

-- Viewer gets read-only access
INSERT INTO role_permissions (role_id, permission_id)
SELECT r.id, p.id FROM roles r CROSS JOIN permissions p
WHERE r.name = 'viewer' AND p.action = 'read';
