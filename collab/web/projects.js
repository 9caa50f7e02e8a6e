// The project list (GET /api/v1/projects) and "new project" (POST /api/v1/projects).

import { clear, h, icon } from './dom.js';
import { avatar, describeError, toast } from './ui.js';

export class ProjectsView {
  constructor(app) {
    this.app = app;
    this.grid = h('div', { class: 'project-grid' });
    this.el = h('main', { class: 'projects' },
      h('div', { class: 'page-head' },
        h('div', {},
          h('h1', { class: 'page-title' }, 'Projects'),
          h('p', { class: 'muted' }, 'Boards you are a member of.')),
        h('button', { class: 'btn btn-primary', onclick: () => this.showForm() }, icon('plus'), 'New project')),
      this.formHost = h('div', {}),
      this.grid);
    document.title = 'Projects · Collab';
    this.load();
  }

  async load() {
    clear(this.grid).append(h('p', { class: 'muted' }, 'Loading…'));
    try {
      const page = await this.app.api.projects();
      this.render(page.data || []);
    } catch (error) {
      clear(this.grid).append(h('p', { class: 'form-error' }, describeError(error)));
    }
  }

  render(projects) {
    clear(this.grid);
    if (!projects.length) {
      this.grid.append(h('div', { class: 'empty-state' },
        h('h2', {}, 'No projects yet'),
        h('p', { class: 'muted' }, 'Create one, then add people to it from its board.'),
        h('button', { class: 'btn btn-primary', onclick: () => this.showForm() }, 'Create a project')));
      return;
    }
    for (const project of projects) {
      this.grid.append(h('a', { class: 'project-card', href: `#/p/${project.id}`, dataset: { projectId: project.id } },
        h('div', { class: 'project-card-head' },
          avatar(project.id, project.name, { size: 'lg' }),
          h('div', {},
            h('h2', { class: 'project-name' }, project.name),
            h('span', { class: ['pill', `pill-${project.status}`] }, String(project.status || '').replace('_', ' ')))),
        project.description ? h('p', { class: 'project-description' }, project.description) : null,
        h('div', { class: 'project-stats muted' },
          project.task_count !== undefined ? h('span', {}, `${project.task_count} tasks`) : null,
          project.member_count !== undefined ? h('span', {}, `${project.member_count} members`) : null,
          project.my_role ? h('span', {}, project.my_role) : null)));
    }
  }

  showForm() {
    if (this.formHost.childElementCount) {
      this.formHost.querySelector('input').focus();
      return;
    }
    const name = h('input', { class: 'input', name: 'name', required: true, maxlength: '200', placeholder: 'e.g. Website launch' });
    const description = h('textarea', { class: 'input', name: 'description', rows: '2', maxlength: '10000', placeholder: 'What is it about? (optional)' });
    const form = h('form', { class: 'new-project card-surface' },
      h('label', { class: 'field' }, h('span', { class: 'field-label' }, 'Project name'), name),
      h('label', { class: 'field' }, h('span', { class: 'field-label' }, 'Description'), description),
      h('div', { class: 'row-actions' },
        h('button', { class: 'btn btn-primary', type: 'submit' }, 'Create project'),
        h('button', { class: 'btn btn-ghost', type: 'button', onclick: () => clear(this.formHost) }, 'Cancel')));
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      try {
        const body = { name: name.value.trim() };
        if (description.value.trim()) body.description = description.value.trim();
        const project = await this.app.api.createProject(body);
        this.app.navigate(`#/p/${project.id}`);
      } catch (error) {
        toast(describeError(error), 'error');
      }
    });
    this.formHost.append(form);
    name.focus();
  }

  destroy() {}
}
