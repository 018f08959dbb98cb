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
