% rebase('base.tpl', title='Folders')
<div class="mail-layout">
% include('_folders.tpl')
<section class="mail-main">
<h1>Folders</h1>
<section class="card">
<form method="post" action="/mail/folders">
  <input type="hidden" name="csrf" value="{{csrf}}">
  <label for="new-folder">New folder</label>
  <p class="hint" id="new-folder-hint">Put a folder inside another with <code>/</code>: <code>Projects/2026</code>.</p>
  <div class="inline-field">
    <input id="new-folder" name="name" required maxlength="255" aria-describedby="new-folder-hint">
    <button type="submit" class="primary">Create folder</button>
  </div>
</form>
</section>
% own = [f for f in folders if f['name'] not in ('INBOX', 'Drafts', 'Sent', 'Archive', 'Junk', 'Trash')]
% if not own:
<p class="empty">You have no folders of your own yet. Inbox, Drafts, Sent, Archive, Junk and Trash are always there.</p>
% else:
<ul class="folder-admin">
% for i, f in enumerate(own):
<li class="card">
  <div class="folder-name"><a href="{{f['href']}}">{{f['name']}}</a>
    <span class="meta">{{f['total']}} message{{'' if f['total'] == 1 else 's'}}{{', %d unread' % f['unread'] if f['unread'] else ''}}</span></div>
  <div class="folder-forms">
  <form method="post" action="/mail/folders/rename" class="inline-field">
    <input type="hidden" name="csrf" value="{{csrf}}"><input type="hidden" name="folder" value="{{f['name']}}">
    <label for="rename-{{i}}" class="visually-hidden">New name for {{f['name']}}</label>
    <input id="rename-{{i}}" name="name" value="{{f['name']}}" required maxlength="255">
    <button type="submit" aria-label="Rename {{f['name']}}">Rename</button>
  </form>
  <form method="post" action="/mail/folders/delete" class="inline" data-confirm="Delete the folder {{f['name']}} and the folders under it? Its messages go to Trash.">
    <input type="hidden" name="csrf" value="{{csrf}}"><input type="hidden" name="folder" value="{{f['name']}}">
    <button type="submit" class="danger" aria-label="Delete folder {{f['name']}}">Delete</button>
  </form>
  </div>
</li>
% end
</ul>
% end
</section>
</div>
