% rebase('base.tpl', title='Are you sure?')
<section class="card narrow">
<h1>Are you sure?</h1>
<p>{{question}}</p>
<form method="post" action="{{action}}">
  <input type="hidden" name="csrf" value="{{csrf}}">
  % for name, value in fields:
  <input type="hidden" name="{{name}}" value="{{value}}">
  % end
  <input type="hidden" name="confirm" value="1">
  <div class="actions">
    <button type="submit" class="danger">{{button}}</button>
    <a class="button" href="{{cancel}}">Cancel</a>
  </div>
</form>
</section>
