% label = folder_label(folder) if folder else 'All mail'
% rebase('base.tpl', title=('Search' if query else label))
<div class="mail-layout">
% include('_folders.tpl')
<section class="mail-main">
<div class="folder-head">
  <h1>{{'Results for “%s”' % query if query else label}}</h1>
  % if not query:
  <nav class="view-switch" aria-label="View">
    % if threaded:
    <a href="{{folder_href(folder)}}">Messages</a> · <strong>Conversations</strong>
    % else:
    <strong>Messages</strong> · <a href="{{folder_href(folder, view='conversations')}}">Conversations</a>
    % end
  </nav>
  % end
  % if folder in ('Trash', 'Junk') and messages and not query:
  <form method="post" action="/mail/folders/empty" class="inline" data-confirm="Delete every message in {{folder}} for good?">
    <input type="hidden" name="csrf" value="{{csrf}}"><input type="hidden" name="folder" value="{{folder}}">
    <button type="submit" class="danger">Empty {{folder}}</button>
  </form>
  % end
</div>
% if query and get('pending', 0):
<p class="notice">Search is still indexing {{pending}} message{{'' if pending == 1 else 's'}}; these results may be incomplete.</p>
% end
% if not messages:
<p class="empty">{{'No messages match.' if query else {'INBOX': 'Your inbox is empty.', 'Sent': 'Nothing sent yet.', 'Drafts': 'No drafts.', 'Trash': 'Trash is empty.', 'Junk': 'No junk.'}.get(folder, 'No messages in %s.' % label)}}</p>
% end
% selectable = messages and not threaded
% if selectable:
<form method="post" action="/mail/batch" id="batch-form" class="batch">
  <input type="hidden" name="csrf" value="{{csrf}}">
  <input type="hidden" name="back" value="{{folder}}">
  <input type="hidden" name="q" value="{{query}}">
  <span class="select-all" hidden><input type="checkbox" id="select-all"><label for="select-all">All</label></span>
  % if folder == 'Archive':
  <button type="submit" name="action" value="inbox">Move to Inbox</button>
  % else:
  <button type="submit" name="action" value="archive">Archive</button>
  % end
  % if folder == 'Junk':
  <button type="submit" name="action" value="inbox">Not junk</button>
  % else:
  <button type="submit" name="action" value="junk">Junk</button>
  % end
  <button type="submit" name="action" value="delete" class="danger">Delete</button>
  <button type="submit" name="action" value="read">Mark read</button>
  <button type="submit" name="action" value="unread">Mark unread</button>
  <button type="submit" name="action" value="star">Star</button>
  <button type="submit" name="action" value="unstar">Unstar</button>
  <span class="move-to">
    <label for="batch-folder">Move to</label>
    <select id="batch-folder" name="folder">
    % for f in move_targets:
      <option value="{{f['name']}}">{{f['label']}}</option>
    % end
    </select>
    <button type="submit" name="action" value="move">Move</button>
  </span>
</form>
% end
<ul class="messages" id="message-list">
% for m in messages:
  % outgoing = m['folder'] in ('Sent', 'Drafts')
  % subject = m['subject'] or '(no subject)'
  <li class="message{{' unread' if not m['read'] else ''}}{{' flagged' if m['flagged'] else ''}}" data-id="{{m['id']}}">
    % if selectable:
    <input type="checkbox" class="pick" name="ids" value="{{m['id']}}" form="batch-form" aria-label="Select {{subject}}">
    % end
    <span class="who">{{(', '.join(m['to']) or '(no recipient)') if outgoing else (m['from_name'] or m['from'])}}</span>
    <a class="subject" href="{{'/mail/compose?draft=' + m['id'] if m['draft'] and m['folder'] == 'Drafts' else '/mail/' + m['id']}}">{{subject}}</a>
    <span class="snippet">{{m['snippet']}}</span>
    <span class="marks">
    % if m.get('count', 1) > 1:
      <span class="count" title="{{m['count']}} messages in this conversation">{{m['count']}}</span>
    % end
    % if m['flagged']:
      <span class="star" role="img" aria-label="Starred" title="Starred">★</span>
    % end
    % if query and m['folder'] != 'INBOX':
      <span class="in-folder">{{folder_label(m['folder'])}}</span>
    % end
    % if m.get('status'):
      <span class="status status-{{m['status']}}">{{m['status']}}</span>
    % end
    % if m['attachments']:
      <span class="clip" title="Has attachments">📎</span>
    % end
    </span>
    <time datetime="{{m['created_at']}}" data-style="short">{{m['created_at'][:16].replace('T', ' ')}} UTC</time>
  </li>
% end
</ul>
% if next_before:
<p><a class="button" href="{{folder_href(folder, before=next_before, view='conversations' if threaded else '')}}">Older messages</a></p>
% end
</section>
</div>
