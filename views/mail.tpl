% rebase('base.tpl', title=('Search' if query else ('Inbox' if folder == 'inbox' else 'Sent')))
<div class="folder-head">
  <h1>{{'Results for “%s”' % query if query else ('Inbox' if folder == 'inbox' else 'Sent')}}</h1>
  % if not query:
  <nav class="view-switch" aria-label="View">
    % if threaded:
    <a href="/mail?folder={{folder}}">Messages</a> · <strong>Conversations</strong>
    % else:
    <strong>Messages</strong> · <a href="/mail?folder={{folder}}&view=conversations">Conversations</a>
    % end
  </nav>
  % end
</div>
% if not messages:
<p class="empty">{{'No messages match.' if query else ('Your inbox is empty.' if folder == 'inbox' else 'Nothing sent yet.')}}</p>
% end
<ul class="messages" id="message-list">
% for m in messages:
  <li class="message{{' unread' if not m['read'] else ''}}" data-id="{{m['id']}}">
    <span class="who">{{', '.join(m['to']) if m['folder'] == 'sent' else (m['from_name'] or m['from'])}}</span>
    <a class="subject" href="/mail/{{m['id']}}">{{m['subject'] or '(no subject)'}}</a>
    % if m.get('count', 1) > 1:
    <span class="count" title="{{m['count']}} messages in this conversation">{{m['count']}}</span>
    % end
    <span class="snippet">{{m['snippet']}}</span>
    % if m.get('status'):
    <span class="status status-{{m['status']}}">{{m['status']}}</span>
    % end
    % if m['attachments']:
    <span class="clip" title="Has attachments">📎</span>
    % end
    <time datetime="{{m['created_at']}}">{{m['created_at'][:16].replace('T', ' ')}}</time>
  </li>
% end
</ul>
% if next_before:
<p><a class="button" href="/mail?folder={{folder}}&before={{next_before}}{{'&view=conversations' if threaded else ''}}">Older messages</a></p>
% end
