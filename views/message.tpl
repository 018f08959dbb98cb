% rebase('base.tpl', title=message['subject'] or '(no subject)')
<div class="mail-layout">
% include('_folders.tpl')
<article class="conversation mail-main">
<h1 class="message-subject">{{message['subject'] or '(no subject)'}}</h1>
% for m in thread:
<section class="card mail{{' current' if m['id'] == message['id'] else ''}}" id="m-{{m['id']}}">
  <header class="mail-head">
    <div><strong>{{m['from_name'] or m['from']}}</strong>
      % if m['from_addr'] and m['from_addr'] != m['from_name']:
      <span class="addr">&lt;{{m['from_addr']}}&gt;</span>
      % end
    </div>
    <div class="meta">to {{', '.join(m['to'])}} · <time datetime="{{m['created_at']}}">{{m['created_at'][:16].replace('T', ' ')}} UTC</time>
      % if m['id'] != message['id'] and m['folder'] != message['folder']:
      · <span class="in-folder">{{folder_label(m['folder'])}}</span>
      % end
    </div>
    % if m.get('status'):
    <div class="delivery status-{{m['status']}}">Delivery: <strong>{{m['status']}}</strong>
      % if m.get('status_detail'):
      — {{m['status_detail']}}
      % end
      % if m.get('next_try') and m['status'] == 'deferred':
      (next try {{m['next_try'].replace('T', ' ')}})
      % end
    </div>
    % end
    % if m.get('auth'):
    <div class="meta auth">SPF {{m['auth'].get('spf')}} · DKIM {{m['auth'].get('dkim')}} · DMARC {{m['auth'].get('dmarc')}}</div>
    % end
  </header>
  % if m['id'] == message['id'] or not m['read']:
    % if m['has_html']:
  <p class="html-note">This message has formatting. Scripts and remote content are blocked.
    % if not images:
    <a href="/mail/{{m['id']}}?images=1">Load remote images</a>
    % end
  </p>
  <iframe class="html-body" sandbox="" referrerpolicy="no-referrer" title="Message content"
          src="/mail/{{m['id']}}/html{{'?images=1' if images else ''}}"></iframe>
    % else:
  <div class="body">{{m['body']}}</div>
    % end
  % else:
  <p class="snippet"><a href="/mail/{{m['id']}}">{{m['snippet']}}</a></p>
  % end
  % if m['attachments']:
  <ul class="attachments">
    % for i, a in enumerate(m['attachments']):
    <li><a href="/mail/{{m['id']}}/attachments/{{i}}" download>{{a['name']}}</a> <span class="meta">{{a['type']}}, {{a['size']}} bytes</span></li>
    % end
  </ul>
  % end
</section>
% end
<div class="actions toolbar">
  <a class="button primary" id="reply-link" href="/mail/compose?reply={{message['id']}}">Reply</a>
  <a class="button" href="/mail/compose?reply={{message['id']}}&all=1">Reply all</a>
  <a class="button" href="/mail/compose?forward={{message['id']}}">Forward</a>
  <a class="button" href="/mail/{{message['id']}}/raw" target="_blank" rel="noopener">Show original</a>
  % here = message['folder']
  <form method="post" action="/mail/{{message['id']}}/{{'inbox' if here == 'Archive' else 'archive'}}" class="inline">
    <input type="hidden" name="csrf" value="{{csrf}}"><button type="submit"{{!'' if here == 'Archive' else ' id="archive-button"'}}>{{'Move to Inbox' if here == 'Archive' else 'Archive'}}</button>
  </form>
  <form method="post" action="/mail/{{message['id']}}/{{'inbox' if here == 'Junk' else 'junk'}}" class="inline">
    <input type="hidden" name="csrf" value="{{csrf}}"><button type="submit"{{!'' if here == 'Junk' else ' id="junk-button"'}}>{{'Not junk' if here == 'Junk' else 'Junk'}}</button>
  </form>
  <form method="post" action="/mail/{{message['id']}}/delete" class="inline" id="delete-form">
    <input type="hidden" name="csrf" value="{{csrf}}"><button type="submit" class="danger" id="delete-button" title="{{'Delete for good' if here == 'Trash' else 'Move to Trash'}}">Delete</button>
  </form>
  <form method="post" action="/mail/{{message['id']}}/{{'unstar' if message['flagged'] else 'star'}}" class="inline">
    <input type="hidden" name="csrf" value="{{csrf}}">
    <button type="submit" id="star-button" aria-pressed="{{'true' if message['flagged'] else 'false'}}" title="{{'Remove the star' if message['flagged'] else 'Star this message'}}"><span aria-hidden="true">{{'★' if message['flagged'] else '☆'}}</span> {{'Starred' if message['flagged'] else 'Star'}}</button>
  </form>
  <form method="post" action="/mail/{{message['id']}}/unread" class="inline">
    <input type="hidden" name="csrf" value="{{csrf}}"><button type="submit">Mark unread</button>
  </form>
  <form method="post" action="/mail/{{message['id']}}/move" class="inline move-to">
    <input type="hidden" name="csrf" value="{{csrf}}">
    <label for="move-folder">Move to</label>
    <select id="move-folder" name="folder">
    % for f in move_targets:
      <option value="{{f['name']}}">{{f['label']}}</option>
    % end
    </select>
    <button type="submit">Move</button>
  </form>
  % if user['role'] == 'admin' and '@' in message['from']:
  <form method="post" action="/admin/blocklist" class="inline">
    <input type="hidden" name="csrf" value="{{csrf}}">
    <input type="hidden" name="value" value="{{message['from_addr'] or message['from']}}">
    <button type="submit" name="action" value="block_email">Block sender</button>
  </form>
  % end
</div>
</article>
</div>
