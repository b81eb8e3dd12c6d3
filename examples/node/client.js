#!/usr/bin/env node
// execgw from Node, with nothing from this repo but the .proto files.
//
//   node examples/node/client.js [HOST:PORT]        (or EXECGW_TARGET; default 127.0.0.1:50051)
//
// It publishes a quote, places a MARKET and a LIMIT order, cancels the resting one, reads
// positions, follows StreamFills and resumes it from the last sequence it saw, and reads the
// rich details of an INVALID_ARGUMENT. Every step prints one JSON line, so a program (the
// test in tests/test_node_client.py) can check it. It exits 1 after printing
// {"step":"failed",...} when anything is not as the contract says.
//
// Meant for a paper gateway: it trades 10 NSE:INFY for the strategy "node".
'use strict';

const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

const REPO = path.resolve(__dirname, '..', '..');
const PROTO_DIR = process.env.EXECGW_PROTO_DIR || path.join(REPO, 'proto');
const TARGET = process.argv[2] || process.env.EXECGW_TARGET || '127.0.0.1:50051';
const DEADLINE_MS = Number(process.env.EXECGW_DEADLINE_MS || 10000);
const SYMBOL = process.env.EXECGW_SYMBOL || 'NSE:INFY';
const LTP = Number(process.env.EXECGW_LTP || 1500);
const STRATEGY = 'node';

// The loader options every execgw Node client wants:
// - keepCase: field names as in the .proto (client_order_id), not camelCase.
// - longs: String: int64/uint64 (qty, sequence) arrive as decimal strings; a JS number would
//   silently lose precision above 2^53. Convert with safeInt below.
// - enums: String: enum names ('ORDER_STATUS_FILLED'). A value this client's .proto does not
//   know (a newer gateway) arrives as its number: never assume the name is one you know.
// - defaults: true: unset scalars read as their zero value, unset messages as null.
// - oneofs: true: ExecutionEvent.payload names the member that is set ('fill', ...).
// google/protobuf/{timestamp,struct}.proto are bundled with protobufjs, so no include
// directory is needed for them (it works offline); EXECGW_PROTO_INCLUDE (':'-separated)
// adds directories, e.g. grpc_tools/_proto, to use protoc's copies instead.
const LOADER_OPTIONS = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
  includeDirs: [
    PROTO_DIR,
    ...(process.env.EXECGW_PROTO_INCLUDE || '').split(':').filter(Boolean),
  ],
};

function emit(step, fields) {
  process.stdout.write(`${JSON.stringify({ step, ...fields })}\n`);
}

function deadline() {
  return new Date(Date.now() + DEADLINE_MS);
}

// int64 fields arrive as strings (longs: String): refuse anything a JS number cannot hold.
function safeInt(text) {
  const value = Number(text);
  if (!Number.isSafeInteger(value)) throw new Error(`not a safe integer: ${text}`);
  return value;
}

function unary(client, method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, { deadline: deadline() }, (err, response) =>
      err ? reject(err) : resolve(response),
    );
  });
}

// PublishQuotes is a client stream: write requests, end, then the one response arrives.
function publishQuotes(client, requests) {
  return new Promise((resolve, reject) => {
    const call = client.PublishQuotes({ deadline: deadline() }, (err, response) =>
      err ? reject(err) : resolve(response),
    );
    for (const request of requests) call.write(request);
    call.end();
  });
}

// A StreamFills call read one item at a time: {event}, {error} or {end}.
class EventStream {
  constructor(client, request) {
    // No deadline: a follower stays as long as it likes; a heartbeat says it is alive.
    this.call = client.StreamFills(request);
    this.items = [];
    this.waiting = null;
    this.call.on('data', (response) => this.push({ event: response.event }));
    this.call.on('error', (error) => this.push({ error }));
    this.call.on('end', () => this.push({ end: true }));
  }

  push(item) {
    if (this.waiting) {
      const resolve = this.waiting;
      this.waiting = null;
      resolve(item);
    } else {
      this.items.push(item);
    }
  }

  next() {
    if (this.items.length) return Promise.resolve(this.items.shift());
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting = null;
        reject(new Error(`no StreamFills message within ${DEADLINE_MS} ms`));
      }, DEADLINE_MS);
      this.waiting = (item) => {
        clearTimeout(timer);
        resolve(item);
      };
    });
  }

  // The next event; a stream that ends here is an error.
  async event() {
    const item = await this.next();
    if (item.event) return item.event;
    if (item.error) throw item.error;
    throw new Error('StreamFills ended');
  }

  // Cancel the call and wait until grpc-js reports it over.
  async close() {
    this.call.cancel();
    for (;;) {
      const item = await this.next();
      if (item.end) return;
      if (item.error) {
        if (item.error.code !== grpc.status.CANCELLED) throw item.error;
        return;
      }
    }
  }
}

function result(r) {
  return {
    order_id: r.order_id,
    client_order_id: r.client_order_id,
    status: r.status,
    order_type: r.order_type,
    side: r.side,
    qty: safeInt(r.qty),
    filled_qty: safeInt(r.filled_qty),
    // proto3 `optional double`: with oneofs: true, r._avg_price names it when it is set.
    avg_price: r._avg_price ? r.avg_price : null,
    price: r._price ? r.price : null,
    reject_reason: r.reject_reason,
    message: r.message,
    ...decimals(r),
  };
}

// The exact decimal strings (`*_decimal`) a gateway sends next to its doubles, if any.
function decimals(message) {
  const out = {};
  for (const [key, value] of Object.entries(message)) {
    if (key.endsWith('_decimal')) out[key] = value;
  }
  return out;
}

function describe(event) {
  const out = {
    sequence: safeInt(event.sequence),
    filtered: safeInt(event.filtered),
    kind: event.payload,
  };
  if (event.payload === 'fill') {
    const f = event.fill;
    Object.assign(out, {
      order_id: f.order_id,
      client_order_id: f.client_order_id,
      side: f.side,
      qty: safeInt(f.qty),
      price: f.price,
      ...decimals(f),
      order_status: event.order.status,
      order_filled_qty: safeInt(event.order.filled_qty),
    });
  } else if (event.payload === 'order_update') {
    const u = event.order_update;
    Object.assign(out, {
      order_id: u.order_id,
      client_order_id: u.client_order_id,
      status: u.status,
      filled_qty: safeInt(u.filled_qty),
    });
  } else if (event.payload === 'risk_event') {
    Object.assign(out, { risk_kind: event.risk_event.kind });
  } else if (event.payload === 'heartbeat') {
    out.head_sequence = safeInt(event.heartbeat.head_sequence);
  }
  return out;
}

function expect(condition, message) {
  if (!condition) throw new Error(message);
}

// google.rpc.Status from the `grpc-status-details-bin` trailer, with its BadRequest
// field violations; null when the server sent no details.
function richDetails(error, rpcTypes) {
  const raw = error.metadata ? error.metadata.get('grpc-status-details-bin') : [];
  if (!raw.length) return null;
  const status = rpcTypes.Status.decode(raw[0]);
  const violations = [];
  const others = [];
  for (const detail of status.details) {
    if (detail.type_url.endsWith('/google.rpc.BadRequest')) {
      const badRequest = rpcTypes.BadRequest.decode(detail.value);
      for (const v of badRequest.field_violations) {
        violations.push({ field: v.field, description: v.description, reason: v.reason });
      }
    } else {
      others.push(detail.type_url);
    }
  }
  return {
    trailer_base64: Buffer.from(raw[0]).toString('base64'),
    status_code: status.code,
    status_message: status.message,
    violations,
    other_details: others,
  };
}

function intent(fields) {
  return {
    symbol: SYMBOL,
    strategy_code: STRATEGY,
    qty: 10,
    product: 'PRODUCT_MIS',
    validity: 'VALIDITY_DAY',
    tag: 'node-example',
    // google.protobuf.Struct as protobufjs wants it: {fields: {key: Value}}, where a
    // Value sets one of nullValue, numberValue, stringValue, boolValue, structValue,
    // listValue. camelCase even with keepCase: protobufjs's bundled struct.proto is
    // camelCase (protoc's own copy, loaded from disk, would be snake_case). A plain JS
    // object is NOT accepted here.
    metadata: { fields: { source: { stringValue: 'examples/node' } } },
    ...fields,
  };
}

async function main() {
  const definition = protoLoader.loadSync(
    ['execgw/v1/gateway.proto', 'execgw/v1/market_data.proto'],
    LOADER_OPTIONS,
  );
  const v1 = grpc.loadPackageDefinition(definition).execgw.v1;
  // keepCase here too: field_violations, type_url.
  const rpcTypes = new protobuf.Root().loadSync(
    [
      path.join(__dirname, 'proto', 'google', 'rpc', 'status.proto'),
      path.join(__dirname, 'proto', 'google', 'rpc', 'error_details.proto'),
    ],
    { keepCase: true },
  );
  const rpc = {
    Status: rpcTypes.lookupType('google.rpc.Status'),
    BadRequest: rpcTypes.lookupType('google.rpc.BadRequest'),
  };

  const credentials = grpc.credentials.createInsecure();
  const gateway = new v1.ExecutionGateway(TARGET, credentials);
  const marketData = new v1.MarketData(TARGET, credentials);
  try {
    await new Promise((resolve, reject) =>
      gateway.waitForReady(deadline(), (err) => (err ? reject(err) : resolve())),
    );
    emit('ready', { target: TARGET });

    // 1. A quote, so MARKET orders have a price and LIMIT orders a collar.
    const published = await publishQuotes(marketData, [
      {
        quotes: [
          {
            symbol: SYMBOL,
            ltp: LTP,
            bid: LTP - 0.05,
            ask: LTP + 0.05,
            bid_qty: 100,
            ask_qty: 100,
            volume: 1000,
          },
        ],
      },
    ]);
    emit('publish', {
      accepted: safeInt(published.accepted),
      refused_count: safeInt(published.refused_count),
    });

    // 2. Follow the stream from the journal's first event. The first heartbeat comes once
    // the replay is done and the stream is live, so nothing after it can be missed.
    const first = new EventStream(gateway, {
      from_sequence: '1',
      include_order_updates: true,
      strategy_codes: [STRATEGY],
    });
    for (;;) {
      const event = await first.event();
      if (event.payload === 'heartbeat') {
        emit('stream_live', { head_sequence: safeInt(event.heartbeat.head_sequence) });
        break;
      }
      emit('event', { stream: 1, ...describe(event) });
    }

    // 3. A MARKET order with our own client_order_id: a retry with the same id returns the
    // same order and never places a second one. Never leave it empty.
    const market = (
      await unary(gateway, 'SubmitOrder', {
        client_order_id: 'node-mkt-1',
        intent: intent({ side: 'SIDE_BUY', order_type: 'ORDER_TYPE_MARKET' }),
      })
    ).result;
    emit('submit_market', result(market));

    // 4. Read until its fill; remember the last sequence seen, then drop the stream.
    let last = 0;
    for (;;) {
      const event = await first.event();
      if (event.payload === 'heartbeat') continue;
      emit('event', { stream: 1, ...describe(event) });
      last = safeInt(event.sequence);
      if (event.payload === 'fill' && event.fill.order_id === market.order_id) break;
    }
    await first.close();
    emit('stream_closed', { last_sequence: last });

    // 5. The retry: same client_order_id, same order, no second fill.
    const retried = (
      await unary(gateway, 'SubmitOrder', {
        client_order_id: 'node-mkt-1',
        intent: intent({ side: 'SIDE_BUY', order_type: 'ORDER_TYPE_MARKET' }),
      })
    ).result;
    expect(retried.order_id === market.order_id, 'a retry placed a second order');
    emit('retry_market', result(retried));

    // 6. A LIMIT above the market rests; cancel it.
    const limit = (
      await unary(gateway, 'SubmitOrder', {
        client_order_id: 'node-lmt-1',
        intent: intent({ side: 'SIDE_SELL', order_type: 'ORDER_TYPE_LIMIT', price: LTP + 10 }),
      })
    ).result;
    emit('submit_limit', result(limit));
    const cancelled = (await unary(gateway, 'CancelOrder', { order_id: limit.order_id })).result;
    emit('cancel', result(cancelled));

    // 7. Positions.
    const { positions } = await unary(gateway, 'GetPositions', { strategy_code: STRATEGY });
    for (const p of positions) {
      emit('position', {
        strategy_code: p.strategy_code,
        symbol: p.symbol,
        product: p.product,
        net_qty: safeInt(p.net_qty),
        avg_price: p.avg_price,
        realized_pnl: p.realized_pnl,
        unrealized_pnl: p.unrealized_pnl,
        last_price: p._last_price ? p.last_price : null,
        ...decimals(p),
      });
    }

    // 8. Resume from the event after the last one seen: the events of steps 5-6 arrive
    // from the journal, each sequence exactly filtered + 1 after the one before.
    const resumeFrom = last + 1;
    const second = new EventStream(gateway, {
      from_sequence: String(resumeFrom),
      include_order_updates: true,
      strategy_codes: [STRATEGY],
    });
    let previous = last;
    let firstSequence = null;
    for (;;) {
      const event = await second.event();
      if (event.payload === 'heartbeat') continue;
      const sequence = safeInt(event.sequence);
      const filtered = safeInt(event.filtered);
      expect(
        sequence === previous + filtered + 1,
        `gap: after ${previous} came ${sequence} with filtered=${filtered}`,
      );
      if (firstSequence === null) firstSequence = sequence;
      previous = sequence;
      emit('event', { stream: 2, ...describe(event) });
      if (
        event.payload === 'order_update' &&
        event.order_update.order_id === limit.order_id &&
        event.order_update.status === 'ORDER_STATUS_CANCELLED'
      ) {
        break;
      }
    }
    await second.close();
    emit('resumed', { from_sequence: resumeFrom, first_sequence: firstSequence, gap_free: true });

    // 9. INVALID_ARGUMENT: the message names the field; a google.rpc.Status with a
    // BadRequest in the grpc-status-details-bin trailer lists every violation.
    try {
      const unexpected = await unary(gateway, 'SubmitOrder', {
        client_order_id: 'node-bad-1',
        intent: intent({ side: 'SIDE_BUY', order_type: 'ORDER_TYPE_MARKET', qty: 0 }),
      });
      throw new Error(`qty 0 was accepted: ${JSON.stringify(unexpected)}`);
    } catch (err) {
      if (err.code !== grpc.status.INVALID_ARGUMENT) throw err;
      emit('invalid_argument', {
        code: err.code,
        code_name: grpc.status[err.code],
        details: err.details,
        rich: richDetails(err, rpc),
      });
    }
    emit('done', {});
  } finally {
    gateway.close();
    marketData.close();
  }
}

main().catch((err) => {
  emit('failed', {
    message: String(err && err.message ? err.message : err),
    code: err && err.code !== undefined ? err.code : null,
  });
  process.exitCode = 1;
});
