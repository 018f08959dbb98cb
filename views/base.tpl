<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{'(%d) ' % unread if unread else ''}}{{title}} · mu</title>
<link rel="stylesheet" href="/static/style.css">
<script src="/static/app.js" defer></script>
</head>
<body>
<header class="top">
  <a class="brand" href="/mail">mu</a>
  % if user:
  <nav aria-label="Main">
    <a href="/mail/compose" class="button primary" id="compose-link" accesskey="c">Compose</a>
    <a href="/mail">Mail <span class="badge" id="unread-badge" data-count="{{unread}}">{{unread if unread else ''}}</span></a>
    % if user['role'] == 'admin':
    <a href="/admin/mail">Admin</a>
    % end
  </nav>
  <form class="search" action="/mail" method="get" role="search">
    <label for="q" class="visually-hidden">Search mail</label>
    <input id="q" name="q" type="search" placeholder="Search mail" value="{{get('query', '')}}">
  </form>
  <form method="post" action="/logout" class="logout">
    <input type="hidden" name="csrf" value="{{csrf}}">
    <span class="whoami"><a href="/settings">{{user['name']}}</a> · <span id="credits">{{user['credits']}}</span> credits</span>
    <button type="submit" class="link">Log out</button>
  </form>
  % end
</header>
<main>
% if flash:
<p class="flash" role="status">{{flash}}</p>
% end
% if error:
<p class="error" role="alert">{{error}}</p>
% end
{{!base}}
</main>
</body>
</html>
