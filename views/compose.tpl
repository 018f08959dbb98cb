% rebase('base.tpl', title='Compose')
<div class="mail-layout">
% include('_folders.tpl')
<section class="card mail-main">
<h1>{{'Draft' if draft_id else ('Reply' if reply_to else 'New message')}}</h1>
<form method="post" action="/mail/compose" enctype="multipart/form-data" id="compose-form">
  <input type="hidden" name="csrf" value="{{csrf}}">
  <input type="hidden" name="reply_to" value="{{reply_to}}">
  <input type="hidden" name="draft_id" value="{{draft_id}}">
  <label for="to">To</label>
  <input id="to" name="to" list="known-users" value="{{to}}" required autocomplete="off" autocapitalize="none"
         placeholder="username, or name@example.com; separate several with commas" {{'' if to else 'autofocus'}}>
  <datalist id="known-users">
  % for name in usernames:
    <option value="{{name}}">
  % end
  </datalist>
  <p class="hint">Direct messages to users here are free. Email to other domains costs {{cost}} credits per message; you have {{user['credits']}}.</p>
  <label for="subject">Subject</label>
  <input id="subject" name="subject" value="{{subject}}" maxlength="998">
  <label for="body">Message</label>
  <textarea id="body" name="body" rows="14" {{'autofocus' if to else ''}}>{{body}}</textarea>
  % if kept:
  <fieldset class="kept">
    <legend>Attached</legend>
    % for i, a in kept:
    <input type="checkbox" id="keep-{{i}}" name="keep_attachment" value="{{i}}" checked>
    <label for="keep-{{i}}" class="inline-label">{{a['name']}} <span class="meta">{{a['type']}}, {{a['size']}} bytes</span></label>
    % end
  </fieldset>
  % end
  <label for="attachments">Attach files</label>
  <input id="attachments" name="attachments" type="file" multiple>
  <div class="actions">
    <button type="submit" class="primary">Send</button>
    <button type="submit" name="action" value="draft" formnovalidate>Save draft</button>
    % if draft_id:
    <button type="submit" formaction="/mail/{{draft_id}}/delete" formnovalidate class="danger">Discard draft</button>
    % end
    <a href="{{folder_href('Drafts') if draft_id else '/mail'}}" class="button">Cancel</a>
  </div>
</form>
</section>
</div>
