% rebase('base.tpl', title='Users')
% include('admin_nav.tpl')
<h1>Users</h1>
<table class="list">
<thead><tr><th>User</th><th>Role</th><th>Credits</th><th>Actions</th></tr></thead>
<tbody>
% for u in users:
<tr class="{{'disabled' if u.get('disabled') else ''}}">
<td>{{u['name']}}{{' (disabled)' if u.get('disabled') else ''}}</td><td>{{u['role']}}</td><td>{{u['credits']}}</td>
<td>
  <form method="post" action="/admin/users/{{u['name']}}" class="inline">
    <input type="hidden" name="csrf" value="{{csrf}}">
    % if u['role'] == 'admin':
    <button type="submit" name="action" value="remove_admin">Remove admin</button>
    % else:
    <button type="submit" name="action" value="make_admin">Make admin</button>
    % end
  </form>
  <form method="post" action="/admin/users/{{u['name']}}" class="inline">
    <input type="hidden" name="csrf" value="{{csrf}}">
    <label for="credits-{{u['name']}}" class="visually-hidden">Credits to add for {{u['name']}}</label>
    <input id="credits-{{u['name']}}" name="amount" type="number" value="10" class="small">
    <button type="submit" name="action" value="add_credits">Add credits</button>
  </form>
  <form method="post" action="/admin/users/{{u['name']}}" class="inline">
    <input type="hidden" name="csrf" value="{{csrf}}">
    % if u.get('disabled'):
    <button type="submit" name="action" value="enable">Enable</button>
    % else:
    <button type="submit" name="action" value="disable" class="danger">Disable</button>
    % end
  </form>
</td></tr>
% end
</tbody>
</table>
<h2>Invitations</h2>
<p class="hint">Sign-up on this server is <strong>{{signup}}</strong> (<code>MU_SIGNUP</code>).
% if signup == 'invite':
An invitation link lets one person sign up, within 7 days.
% elif signup == 'open':
Anyone may sign up; invitation links work too.
% else:
Only <code>users add</code> makes accounts; invitation links do not work while sign-up is closed.
% end
</p>
% if get('new_invite'):
<p class="invite-link"><label for="invite-link">Invitation link</label>
<input id="invite-link" type="text" readonly value="{{new_invite}}" size="70"></p>
% end
<form method="post" action="/admin/invites" class="inline">
  <input type="hidden" name="csrf" value="{{csrf}}">
  <button type="submit" class="primary">Make invitation link</button>
</form>
% if invites:
<table class="list">
<thead><tr><th>Invitation</th><th>Made by</th><th>Made</th><th>Expires</th><th></th></tr></thead>
<tbody>
% for inv in invites:
<tr><td><code>{{inv['id']}}</code></td><td>{{inv['by']}}</td><td>{{when(inv['created_at'])}}</td><td>{{when(inv['expires'])}}</td>
<td><form method="post" action="/admin/invites/{{inv['id']}}/revoke" class="inline">
  <input type="hidden" name="csrf" value="{{csrf}}">
  <button type="submit" class="danger" aria-label="Revoke invitation {{inv['id']}}">Revoke</button>
</form></td></tr>
% end
</tbody>
</table>
% end
