% rebase('base.tpl', title='Sign up')
<section class="card narrow">
% if get('closed'):
<h1>Sign-up</h1>
<p>Already have an account? <a href="/login">Log in</a></p>
% else:
<h1>{{'Create the admin account' if get('as_admin') else 'Create your account'}}</h1>
% if get('as_admin'):
<p class="hint">This server has no admin yet: the account you create here becomes its admin.</p>
% end
<form method="post" action="/signup">
  <input type="hidden" name="csrf" value="{{csrf}}">
  % if get('invite'):
  <input type="hidden" name="invite" value="{{invite}}">
  % end
  % if get('setup'):
  <input type="hidden" name="setup" value="{{setup}}">
  % end
  <label for="username">Username</label>
  <input id="username" name="username" autocomplete="username" autocapitalize="none" required
         pattern="[A-Za-z][A-Za-z0-9_.\-]{2,31}" maxlength="32" value="{{name}}" autofocus>
  <p class="hint">3–32 characters: letters, digits, dot, dash, underscore. Your address will be <em>name@{{domain}}</em>.</p>
  <label for="password">Password</label>
  <input id="password" name="password" type="password" autocomplete="new-password" required minlength="6">
  <button type="submit" class="primary">Sign up</button>
</form>
<p>Already have an account? <a href="/login">Log in</a></p>
% end
</section>
