% rebase('base.tpl', title='DNS check')
% include('admin_nav.tpl')
<h1>DNS check for {{domain}}</h1>
<p class="hint">The same report as <code>python mu.py doctor</code>.</p>
<table class="list">
<thead><tr><th>Result</th><th>Check</th><th>Found</th><th>Fix</th></tr></thead>
<tbody>
% for level, name, found, fix in results:
<tr class="doctor-{{level.lower()}}"><td><strong>{{level}}</strong></td><td>{{name}}</td><td>{{found}}</td><td><code>{{fix}}</code></td></tr>
% end
</tbody>
</table>
