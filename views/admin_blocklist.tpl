% rebase('base.tpl', title='Blocklist')
% include('admin_nav.tpl')
<h1>Blocklist</h1>
<section class="card">
<form method="post" action="/admin/blocklist" class="block-form">
  <input type="hidden" name="csrf" value="{{csrf}}">
  <label for="block-value">Email or IP address</label>
  <input id="block-value" name="value" required placeholder="spammer@example.com, *@spammy.example or 192.0.2.1">
  <div class="actions">
    <button type="submit" name="action" value="block_email" class="danger">Block Email</button>
    <button type="submit" name="action" value="block_ip" class="danger">Block IP</button>
  </div>
</form>
</section>
% if not entries:
<p class="empty">Nothing is blocked.</p>
% end
<table class="list">
% if entries:
<thead><tr><th>Blocked</th><th>Kind</th><th></th></tr></thead>
% end
<tbody>
% for e in entries:
<tr><td>{{e['value']}}</td><td>{{'IP' if e['kind'] == 'ip' else 'Email'}}</td>
<td><form method="post" action="/admin/blocklist" class="inline">
  <input type="hidden" name="csrf" value="{{csrf}}"><input type="hidden" name="value" value="{{e['value']}}">
  <button type="submit" name="action" value="unblock" aria-label="Unblock {{e['value']}}">Unblock</button>
</form></td></tr>
% end
</tbody>
</table>
