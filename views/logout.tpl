% rebase('base.tpl', title='Log out')
<section class="card narrow">
<h1>Log out</h1>
<form method="post" action="/logout">
  <input type="hidden" name="csrf" value="{{csrf}}">
  <button type="submit" class="primary">Log out</button>
</form>
</section>
