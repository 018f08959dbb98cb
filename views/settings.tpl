% rebase('base.tpl', title='Settings')
<h1>Settings</h1>
<section class="card narrow">
<h2>Change password</h2>
<form method="post" action="/settings/password">
  <input type="hidden" name="csrf" value="{{csrf}}">
  <input type="text" name="username" autocomplete="username" value="{{user['name']}}" hidden>
  <label for="current-password">Current password</label>
  <input id="current-password" name="current" type="password" autocomplete="current-password" required>
  <label for="new-password">New password</label>
  <input id="new-password" name="new" type="password" autocomplete="new-password" required minlength="6">
  <label for="repeat-password">Repeat new password</label>
  <input id="repeat-password" name="repeat" type="password" autocomplete="new-password" required minlength="6">
  <button type="submit" class="primary">Change password</button>
</form>
<p class="hint">Changing it signs you out everywhere else.</p>
</section>
<section class="card" id="app-passwords">
<h2>App passwords</h2>
<p>Mail apps (Thunderbird, K-9, iOS Mail, mutt) log in with your username <code>{{user['name']}}</code>
and a password of their own, one per device, so a lost phone is revoked without changing your password.
They work only in mail apps; this site takes your account password only.</p>
% new = get('new_app_password')
% if new:
<div class="flash" role="status" id="new-app-password">
<p>App password for <strong>{{new[0]}}</strong> (shown only now; spaces and dashes do not matter):</p>
<p><code class="secret">{{new[1]}}</code></p>
</div>
% end
% if app_passwords:
<table class="list">
<thead><tr><th>Label</th><th>Made</th><th>Last used</th><th></th></tr></thead>
<tbody>
% for a in app_passwords:
<tr><td>{{a['label']}}</td><td>{{when(a['created_at'])}}</td><td>{{when(a['last_used'])}}</td>
<td><form method="post" action="/settings/app-passwords/revoke" class="inline">
  <input type="hidden" name="csrf" value="{{csrf}}">
  <input type="hidden" name="label" value="{{a['label']}}">
  <button type="submit" class="danger" aria-label="Revoke app password {{a['label']}}">Revoke</button>
</form></td></tr>
% end
</tbody>
</table>
% else:
<p>No app passwords yet.</p>
% end
<form method="post" action="/settings/app-passwords">
  <input type="hidden" name="csrf" value="{{csrf}}">
  <label for="app-password-label">Device</label>
  <input id="app-password-label" name="label" type="text" maxlength="64" required placeholder="e.g. Phone"
         value="{{get('label', '')}}">
  <button type="submit" class="primary">Create app password</button>
</form>
% c = client_settings
% if c['ports']:
<p class="hint">Sending mail (SMTP) from an app: server <code>{{c['host']}}</code>, {{' or '.join(c['ports'])}};
normal password (PLAIN or LOGIN).</p>
% end
</section>
<section class="card">
<h2>API tokens</h2>
% if tokens:
<table class="list">
<thead><tr><th>Token</th><th>Made</th><th>Last used</th><th></th></tr></thead>
<tbody>
% for t in tokens:
<tr><td><code>{{t['id']}}</code></td><td>{{when(t['created_at'])}}</td><td>{{when(t['last_used'])}}</td>
<td><form method="post" action="/settings/tokens/{{t['id']}}/revoke" class="inline">
  <input type="hidden" name="csrf" value="{{csrf}}">
  <button type="submit" class="danger" aria-label="Revoke token {{t['id']}}">Revoke</button>
</form></td></tr>
% end
</tbody>
</table>
% else:
<p>No API tokens. An admin makes them with <code>users token {{user['name']}}</code>.</p>
% end
</section>
