// Sign in and sign up (POST /api/v1/auth/login, /api/v1/auth/register).

import { h, icon } from './dom.js';
import { describeError } from './ui.js';

export class AuthView {
  constructor(app, mode = 'signin') {
    this.app = app;
    this.mode = mode;
    this.el = h('main', { class: 'auth' });
    this.render();
  }

  render() {
    const signup = this.mode === 'signup';
    const error = h('p', { class: 'form-error', role: 'alert', hidden: true });
    const field = (label, input) => h('label', { class: 'field' }, h('span', { class: 'field-label' }, label), input);
    const email = h('input', { class: 'input', type: 'email', name: 'email', autocomplete: 'email', required: true });
    const password = h('input', {
      class: 'input', type: 'password', name: 'password', required: true, minlength: '8',
      autocomplete: signup ? 'new-password' : 'current-password',
    });
    const username = h('input', {
      class: 'input', name: 'username', autocomplete: 'username', required: true, minlength: '3', maxlength: '50',
      pattern: '[A-Za-z0-9_.\\-]+',
    });
    const firstName = h('input', { class: 'input', name: 'first_name', autocomplete: 'given-name', maxlength: '100' });
    const submit = h('button', { class: 'btn btn-primary btn-block', type: 'submit' }, signup ? 'Create account' : 'Sign in');
    const form = h('form', { class: 'auth-form', novalidate: false },
      signup ? field('Name', firstName) : null,
      signup ? field('Username', username) : null,
      field('Email', email),
      field('Password', password),
      error,
      submit);
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      error.hidden = true;
      submit.disabled = true;
      try {
        if (signup) {
          await this.app.api.register({
            email: email.value.trim(), username: username.value.trim(), password: password.value,
            ...(firstName.value.trim() ? { first_name: firstName.value.trim() } : {}),
          });
        }
        await this.app.signIn(email.value.trim(), password.value);
      } catch (err) {
        error.textContent = err.code === 'invalid_credentials' ? 'That email and password do not match.' : describeError(err);
        error.hidden = false;
        submit.disabled = false;
      }
    });
    this.el.replaceChildren(h('div', { class: 'auth-card' },
      h('div', { class: 'brand brand-lg' }, h('span', { class: 'brand-mark' }, icon('check', 18)), 'Collab'),
      h('h1', { class: 'auth-title' }, signup ? 'Create your account' : 'Sign in to your boards'),
      h('p', { class: 'muted auth-sub' }, signup ? 'Projects and tasks, live for everyone on them.' : 'Welcome back.'),
      form,
      h('p', { class: 'auth-switch' },
        signup ? 'Already have an account? ' : 'New here? ',
        h('a', { href: signup ? '#/signin' : '#/signup' }, signup ? 'Sign in' : 'Create an account'))));
    setTimeout(() => (signup ? firstName : email).focus(), 0);
  }

  destroy() {}
}
