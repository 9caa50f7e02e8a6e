-- 0004: indexes for the task lists' default order (newest first) within a
-- project and across the caller's projects, so a page is read in index order
-- instead of sorting every matching row.
CREATE INDEX idx_tasks_project_created ON tasks (project_id, created_at DESC, id);
CREATE INDEX idx_tasks_created_id ON tasks (created_at DESC, id);
CREATE INDEX idx_project_members_user_project ON project_members (user_id, project_id);
