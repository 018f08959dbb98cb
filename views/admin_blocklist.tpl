% rebase('base.tpl', title='Blocklist')
% include('admin_nav.tpl')
<h1>Blocklist</h1>
<section class="card block-forms">
<form method="post" action="/admin/blocklist" class="block-form">
  <input type="hidden" name="csrf" value="{{csrf}}">
  <input type="hidden" name="action" value="block_email">
  <label for="block-email">Block Email</label>
  <p class="hint" id="block-email-hint">An address, or every address at a domain: <code>*@example.com</code></p>
  <div class="inline-field">
    <input id="block-email" name="value" required aria-describedby="block-email-hint" placeholder="spammer@example.com">
    <button type="submit" class="danger">Block Email</button>
  </div>
</form>
<form method="post" action="/admin/blocklist" class="block-form">
  <input type="hidden" name="csrf" value="{{csrf}}">
  <input type="hidden" name="action" value="block_ip">
  <label for="block-ip">Block IP</label>
  <div class="inline-field">
    <input id="block-ip" name="value" required placeholder="192.0.2.1">
    <button type="submit" class="danger">Block IP</button>
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
