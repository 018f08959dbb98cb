% rebase('base.tpl', title='Sign up')
<section class="card narrow">
<h1>Create your account</h1>
<form method="post" action="/signup">
  <input type="hidden" name="csrf" value="{{csrf}}">
  <label for="username">Username</label>
  <input id="username" name="username" autocomplete="username" autocapitalize="none" required
         pattern="[A-Za-z][A-Za-z0-9_.\-]{2,31}" value="{{name}}" autofocus>
  <p class="hint">3–32 characters: letters, digits, dot, dash, underscore. Your address will be <em>name@{{domain}}</em>.</p>
  <label for="password">Password</label>
  <input id="password" name="password" type="password" autocomplete="new-password" required minlength="6">
  <button type="submit" class="primary">Sign up</button>
</form>
<p>Already have an account? <a href="/login">Log in</a></p>
</section>
