// A KCL for Node.js record processor, written the way aws-kcl's README shows, for the
// tests of kds-consumer's MultiLang mode. It appends every record it processes to a record
// log (internal/recordlog's format) before it checkpoints the batch:
// $RECORD_LOG_DIR/<worker>-<shard>-<pid>.jsonl, one file per process so that processes
// never write into each other's lines. The worker id, shard and lease epoch come from
// kds-consumer (KDS_WORKER_ID, KDS_SHARD_ID, KDS_LEASE_EPOCH).
'use strict';

var fs = require('fs');
var path = require('path');
var kcl = require('aws-kcl');

var worker = process.env.KDS_WORKER_ID;
var epoch = Number(process.env.KDS_LEASE_EPOCH || '0');
var delayMs = Number(process.env.KCL_TEST_RECORD_DELAY_MS || '0');
var shardId = null;
var fd = null;
var count = 0;

function log(msg) {
  process.stderr.write('kcl_recorder ' + shardId + ': ' + msg + '\n');
}

var recordProcessor = {
  initialize: function(initializeInput, completeCallback) {
    shardId = initializeInput.shardId;
    fd = fs.openSync(path.join(process.env.RECORD_LOG_DIR, worker + '-' + shardId + '-' + process.pid + '.jsonl'), 'a');
    log('initialized at ' + initializeInput.sequenceNumber + ' sub-sequence ' + initializeInput.subSequenceNumber);
    completeCallback();
  },

  processRecords: function(processRecordsInput, completeCallback) {
    var records = processRecordsInput.records;
    if (!records || records.length === 0) {
      completeCallback();
      return;
    }
    var t = (BigInt(Date.now()) * 1000000n).toString();
    var lines = '';
    var sequenceNumber, subSequenceNumber;
    for (var i = 0; i < records.length; ++i) {
      var record = records[i];
      sequenceNumber = record.sequenceNumber;
      subSequenceNumber = record.subSequenceNumber;
      var line = {worker: worker, shard: shardId, epoch: epoch, seq: sequenceNumber};
      if (subSequenceNumber) {
        line.sub = subSequenceNumber;
      }
      line.pk = record.partitionKey;
      line.data = Buffer.from(record.data, 'base64').toString();
      lines += JSON.stringify(line).slice(0, -1) + ',"t":' + t + '}\n';
    }
    fs.writeSync(fd, lines);
    count += records.length;
    setTimeout(function() {
      processRecordsInput.checkpointer.checkpoint(sequenceNumber, function(err) {
        if (err) {
          log('checkpoint at ' + sequenceNumber + ' refused: ' + err);
        }
        completeCallback();
      });
    }, delayMs);
  },

  leaseLost: function(leaseLostInput, completeCallback) {
    log('lease lost after ' + count + ' records');
    completeCallback();
  },

  shardEnded: function(shardEndedInput, completeCallback) {
    shardEndedInput.checkpointer.checkpoint(function(err) {
      log('shard ended after ' + count + ' records' + (err ? ', checkpoint error ' + err : ''));
      completeCallback();
    });
  },

  shutdownRequested: function(shutdownRequestedInput, completeCallback) {
    shutdownRequestedInput.checkpointer.checkpoint(function(err) {
      log('shutdown requested after ' + count + ' records' + (err ? ', checkpoint error ' + err : ''));
      completeCallback();
    });
  }
};

kcl(recordProcessor).run();
