% rebase('base.tpl', title='Log in')
<section class="card narrow">
<h1>Log in</h1>
<form method="post" action="/login">
  <input type="hidden" name="csrf" value="{{csrf}}">
  <input type="hidden" name="next" value="{{next}}">
  <label for="username">Username</label>
  <input id="username" name="username" autocomplete="username" autocapitalize="none" required value="{{name}}" autofocus>
  <label for="password">Password</label>
  <input id="password" name="password" type="password" autocomplete="current-password" required>
  <button type="submit" class="primary">Log in</button>
</form>
<p>New here? <a href="/signup">Create an account</a></p>
</section>
