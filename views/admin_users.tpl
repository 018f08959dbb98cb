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
