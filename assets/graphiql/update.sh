#!/usr/bin/env bash
# Re-fetches the GraphiQL page's third-party files at the pinned versions from the npm
# registry into vendor/, with their licences. The service embeds vendor/ in its binary
# (src/http/graphiql.rs), so the page needs no network at all; run this only to change a
# version, then commit vendor/ (a re-run at the same versions changes no served file; the
# licence list may pick up newer releases of the bundled packages).
#
# Why these builds: GraphiQL 4 is the last major that publishes a self-contained browser
# build (graphiql.min.js: GraphiQL, graphql-js, CodeMirror 5, graphql-ws and the fetcher
# toolkit in one UMD file that expects React and ReactDOM as globals). React 18 is the last
# major with UMD builds; GraphiQL 4 supports React 18 and 19.
# Needs: npm and node.
set -euo pipefail

GRAPHIQL_VERSION=4.1.2
REACT_VERSION=18.3.1

here="$(cd "$(dirname "$0")" && pwd)"
vendor="$here/vendor"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cd "$work"
echo '{"private": true}' > package.json
# Exact versions; npm checks each tarball against the registry's integrity hash. The whole
# dependency tree is installed only to read the licences of what GraphiQL's bundle contains.
npm install --ignore-scripts --no-audit --no-fund --save-exact --loglevel=error \
  "graphiql@$GRAPHIQL_VERSION" "react@$REACT_VERSION" "react-dom@$REACT_VERSION"

rm -rf "$vendor"
mkdir -p "$vendor"
cp node_modules/react/umd/react.production.min.js "$vendor/"
cp node_modules/react-dom/umd/react-dom.production.min.js "$vendor/"
cp node_modules/graphiql/graphiql.min.js "$vendor/"
cp node_modules/graphiql/graphiql.min.css "$vendor/"

# The licences: the three packages, and every package whose code GraphiQL's bundle holds,
# as its source map lists them.
node - "$vendor" "$GRAPHIQL_VERSION" "$REACT_VERSION" <<'JS'
const fs = require('fs');
const path = require('path');
const [vendor, graphiqlVersion, reactVersion] = process.argv.slice(2);
const map = JSON.parse(fs.readFileSync('node_modules/graphiql/graphiql.min.js.map', 'utf8'));
// Sources outside node_modules are GraphiQL's own monorepo packages, named by folder.
const monorepo = {
  'codemirror-graphql': 'codemirror-graphql',
  'graphiql-plugin-doc-explorer': '@graphiql/plugin-doc-explorer',
  'graphiql-plugin-history': '@graphiql/plugin-history',
  'graphiql-react': '@graphiql/react',
  'graphiql-toolkit': '@graphiql/toolkit',
  'graphql-language-service': 'graphql-language-service',
  'src': 'graphiql',
};
const bundled = new Set();
for (const source of map.sources) {
  const at = source.lastIndexOf('node_modules/');
  if (at < 0) {
    const folder = source.replace(/^(\.\.\/)+/, '').split('/')[0];
    const name = monorepo[folder];
    if (!name) throw new Error(`unknown source folder in GraphiQL's bundle: ${source}`);
    bundled.add(name);
  } else {
    const parts = source.slice(at + 'node_modules/'.length).split('/');
    bundled.add(parts[0].startsWith('@') ? `${parts[0]}/${parts[1]}` : parts[0]);
  }
}
// A package may sit nested (a dependency's own node_modules); take the first found.
function find(name) {
  const stack = ['node_modules'];
  while (stack.length) {
    const dir = stack.shift();
    const candidate = path.join(dir, name, 'package.json');
    if (fs.existsSync(candidate)) return path.dirname(candidate);
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      if (!entry.isDirectory()) continue;
      const sub = path.join(dir, entry.name);
      if (entry.name.startsWith('@')) {
        for (const inner of fs.readdirSync(sub, { withFileTypes: true })) {
          const nested = path.join(sub, inner.name, 'node_modules');
          if (fs.existsSync(nested)) stack.push(nested);
        }
      } else {
        const nested = path.join(sub, 'node_modules');
        if (fs.existsSync(nested)) stack.push(nested);
      }
    }
  }
  return null;
}
function licenceText(dir) {
  const file = fs.readdirSync(dir).find((f) => /^(licen[cs]e|copying)/i.test(f));
  return file ? fs.readFileSync(path.join(dir, file), 'utf8').trim() : null;
}
const out = [
  '# Licences of the vendored GraphiQL files',
  '',
  'Written by `../update.sh`; do not edit. Each file here is copied unchanged from its npm package:',
  '',
  `- \`graphiql.min.js\`, \`graphiql.min.css\`: graphiql ${graphiqlVersion} (MIT)`,
  `- \`react.production.min.js\`: react ${reactVersion} (MIT)`,
  `- \`react-dom.production.min.js\`: react-dom ${reactVersion} (MIT)`,
  '',
  '`graphiql.min.js` bundles the packages below (as its source map lists them). The version',
  'shown is the one the licence text was read from: the one npm installs with graphiql today,',
  'or the newest where that tree no longer has the package. The bundle itself was built by',
  'GraphiQL\'s maintainers from their own lockfile.',
  '',
];
const names = [...bundled].concat(['react-dom']).filter((v, i, a) => a.indexOf(v) === i).sort();
const { execFileSync } = require('child_process');
for (const name of names) {
  let dir = find(name);
  if (!dir) {
    // No longer in graphiql's tree as npm resolves it today: read the package's newest
    // tarball instead.
    const into = fs.mkdtempSync('pack-');
    const tarball = execFileSync('npm', ['pack', '--silent', '--pack-destination', into, name], { encoding: 'utf8' }).trim().split('\n').pop();
    execFileSync('tar', ['xzf', path.join(into, tarball), '-C', into]);
    dir = path.join(into, 'package');
  }
  const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'));
  const licence = typeof pkg.license === 'string' ? pkg.license : JSON.stringify(pkg.license);
  out.push(`## ${name} ${pkg.version} (${licence})`, '');
  const text = licenceText(dir);
  out.push(text ? text.split('\n').map((l) => (l ? `    ${l}` : '')).join('\n') : `    (the package ships no licence file; its package.json says ${licence})`, '');
}
fs.writeFileSync(path.join(vendor, 'LICENSES.md'), out.join('\n'));
JS

cd "$vendor"
sha256sum ./*.js ./*.css
