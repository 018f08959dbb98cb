% rebase('base.tpl', title='Mail log')
% include('admin_nav.tpl')
<h1>Mail log</h1>
<p class="card">{{dkim}}</p>
<h2>Outbound queue ({{len(queue)}})</h2>
% if queue:
<form method="post" action="/admin/mail/retry"><input type="hidden" name="csrf" value="{{csrf}}">
<button type="submit">Retry now</button></form>
<table class="list"><thead><tr><th>Message</th><th>To</th><th>Status</th><th>Attempts</th><th>Last reply</th></tr></thead><tbody>
% import datetime
% for q in queue:
<tr><td>{{subjects.get(q['msg'], '')}}</td><td>{{', '.join(q['rcpts'])}}</td><td>{{q['status']}}</td><td>{{q['attempts']}}</td><td>{{q.get('detail', '')}}</td></tr>
% end
</tbody></table>
% else:
<p class="empty">The queue is empty.</p>
% end
<h2>Recent events</h2>
<table class="list"><thead><tr><th>When</th><th>Event</th><th>Details</th></tr></thead><tbody>
% import datetime
% for e in events:
<tr><td class="nowrap">{{datetime.datetime.utcfromtimestamp(e['at']).strftime('%Y-%m-%d %H:%M:%S')}}</td><td class="nowrap">{{e['kind']}}</td>
<td>{{', '.join('%s=%s' % (k, v) for k, v in sorted(e.items()) if k not in ('kind', 'at'))}}</td></tr>
% end
</tbody></table>
