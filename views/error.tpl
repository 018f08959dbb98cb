<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{status}} · mu</title><link rel="stylesheet" href="/static/style.css"></head>
<body><main class="narrow"><h1>{{status}}</h1><p>{{message}}</p><p><a href="/mail">Back to mail</a> · <a href="/login">Log in</a></p></main></body></html>
