// Starts GraphiQL against the URL the page was served from, so it works behind any host,
// port, scheme or path prefix: queries and mutations go there by HTTP POST, subscriptions
// over a websocket to the same path (graphql-transport-ws, the protocol of graphql-ws,
// which GraphiQL's fetcher speaks). The headers typed in GraphiQL's Headers tab are sent
// with every HTTP request and as the websocket's connection_init payload, so
// {"Authorization": "Bearer <token>"} signs both in.
(function () {
  'use strict';
  var endpoint = new URL(window.location.pathname, window.location.href);
  var subscriptions = new URL(endpoint.href);
  subscriptions.protocol = endpoint.protocol === 'https:' ? 'wss:' : 'ws:';
  var fetcher = GraphiQL.createFetcher({
    url: endpoint.href,
    subscriptionUrl: subscriptions.href,
  });
  ReactDOM.createRoot(document.getElementById('graphiql')).render(
    React.createElement(GraphiQL, {
      fetcher: fetcher,
      // The Variables and Headers tabs open, as the README asks for a token in Headers.
      defaultEditorToolsVisibility: true,
    }),
  );
})();
