<nav class="tabs" aria-label="Admin">
  <a href="/admin/mail">Mail log</a>
  <a href="/admin/users">Users</a>
  <a href="/admin/blocklist">Blocklist</a>
  <a href="/admin/dns">DNS check</a>
</nav>
