% rebase('base.tpl', title='Compose')
<section class="card">
<h1>{{'Reply' if reply_to else 'New message'}}</h1>
<form method="post" action="/mail/compose" enctype="multipart/form-data" id="compose-form">
  <input type="hidden" name="csrf" value="{{csrf}}">
  <input type="hidden" name="reply_to" value="{{reply_to}}">
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
  <label for="attachments">Attach files</label>
  <input id="attachments" name="attachments" type="file" multiple>
  <div class="actions">
    <button type="submit" class="primary">Send</button>
    <a href="/mail" class="button">Cancel</a>
  </div>
</form>
</section>
