// Aggregates user records with the npm package aws-kinesis-agg (the KPL aggregated record
// format for Node.js), for the tests of kds-lease-manager's de-aggregation.
// stdin: one JSON array of user records per line, {"partitionKey", "explicitHashKey"?,
// "data" (base64)}: one aggregate each. stdout: one JSON object per Kinesis record the
// library produced, {"group" (the input line, from 0), "partitionKey",
// "explicitHashKey"?, "data" (base64)}.
'use strict';
const agg = require('aws-kinesis-agg');
const fs = require('fs');

const groups = fs.readFileSync(0, 'utf8').split('\n').filter((l) => l.trim() !== '').map((l) => JSON.parse(l));

function aggregateGroup(group, i) {
  return new Promise((resolve, reject) => {
    const records = group.map((r) => {
      const u = { partitionKey: r.partitionKey, data: Buffer.from(r.data, 'base64') };
      if (r.explicitHashKey) {
        u.explicitHashKey = r.explicitHashKey;
      }
      return u;
    });
    const out = [];
    agg.aggregate(records, (encoded, callback) => {
      const line = { group: i, partitionKey: encoded.partitionKey, data: Buffer.from(encoded.data).toString('base64') };
      if (encoded.ExplicitHashKey) {
        line.explicitHashKey = encoded.ExplicitHashKey;
      }
      out.push(JSON.stringify(line));
      callback();
    }, () => resolve(out), (err) => reject(err));
  });
}

(async () => {
  for (let i = 0; i < groups.length; i++) {
    for (const line of await aggregateGroup(groups[i], i)) {
      process.stdout.write(line + '\n');
    }
  }
})().catch((err) => {
  process.stderr.write(String(err && err.stack || err) + '\n');
  process.exit(1);
});
