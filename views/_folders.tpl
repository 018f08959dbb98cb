<nav class="folders" aria-label="Folders">
<ul>
% for f in folders:
%   here = f['name'] == folder
%   count = f['total'] if f['name'] == 'Drafts' else f['unread']
  <li class="folder{{' current' if here else ''}}{{' sub' if f['parent'] else ''}}"><a href="{{f['href']}}"{{!' aria-current="page"' if here else ''}}>{{!f['parent_html']}}{{f['leaf']}}</a>
%   if count:
    <span class="count">{{count}}<span class="visually-hidden"> {{'drafts' if f['name'] == 'Drafts' else 'unread'}}</span></span>
%   end
  </li>
% end
</ul>
<a class="manage" href="/mail/folders">Manage folders</a>
</nav>
