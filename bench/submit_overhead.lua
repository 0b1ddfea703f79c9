-- wrk script for bench/submit_overhead.sh: POSTs an extend request at a FIXED rate and prints
-- the latency distribution, the achieved rate and the status mix in `done`.
--
--   wrk -t1 -c8 -d20s -s bench/submit_overhead.lua URL -- MODE KEY INTERVAL_MS AUDIO_URL [WEBHOOK_URL] [TAG]
--
--   MODE direct: the fake MusicGPT, POST /api/public/v1/extend, `Authorization: KEY` (raw),
--        body {"audio_url":AUDIO_URL,"extend_after":3,"num_outputs":1,"webhook_url":WEBHOOK_URL}
--        (what segue itself sends there)
--   MODE segue: segue, POST /v1/extensions, `Authorization: Bearer KEY`,
--        body {"audio_url":AUDIO_URL,"extend_after":3,"num_outputs":1}
--   INTERVAL_MS: time between two request starts of one wrk thread (each thread keeps its own
--        schedule): rate = threads * 1000 / INTERVAL_MS.
--   TAG (default "m"): every body also carries "prompt":"sb-TAG-t<µs>", where <µs> is
--        CLOCK_MONOTONIC in microseconds when wrk builds the request, just before it writes it
--        (wrk calls request() from its socket-writable handler). The fake MusicGPT logs the
--        prompt it receives (segue forwards it) and its own CLOCK_MONOTONIC receive time
--        (GET /_control/requests: received_mono_us): the difference is client -> provider.
--
-- Pacing: bench/pacing.lua (absolute start slots INTERVAL_MS apart; the achieved rate is printed).
-- wrk starts its latency clock when the request is written, after the delay.
--
-- `done` prints:  latency_us p50 p90 p99 p999 max mean stdev
--                 achieved requests N duration_us D rate R
--                 status CODE COUNT            (one line per status)
--                 errors connect .. read .. write .. status .. timeout ..

local pacing = dofile("bench/pacing.lua")
local now_us = pacing.now_us

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

local interval
local body_fmt -- the body with one %d: the send time in µs

function init(args)
   counts = {}
   local mode, key = args[1], args[2]
   interval = tonumber(args[3])
   local audio_url = args[4]
   assert(mode and key and interval and interval > 0 and audio_url,
      "args: MODE KEY INTERVAL_MS AUDIO_URL [WEBHOOK_URL] [TAG]")
   local tag = args[6] or "m"
   local audio = string.format('"audio_url":"%s","extend_after":3,"num_outputs":1,"prompt":"sb-%s-t%%d"',
      audio_url, tag)
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "application/json"
   wrk.headers["Accept"] = "application/json"
   if mode == "direct" then
      local hook = assert(args[5], "direct needs WEBHOOK_URL")
      wrk.headers["Authorization"] = key
      body_fmt = string.format('{%s,"webhook_url":"%s"}', audio, hook)
   elseif mode == "segue" then
      wrk.headers["Authorization"] = "Bearer " .. key
      body_fmt = "{" .. audio .. "}"
   else
      error("MODE must be direct or segue, not " .. tostring(mode))
   end
end

function request()
   return wrk.format(nil, nil, nil, string.format(body_fmt, now_us()))
end

delay = pacing.delay_fn(function() return interval end)

function response(status, headers, body)
   counts[status] = (counts[status] or 0) + 1
end

function done(summary, latency, requests)
   io.write(string.format("latency_us %d %d %d %d %d %.1f %.1f\n",
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency:percentile(99.9), latency.max, latency.mean, latency.stdev))
   io.write(string.format("achieved requests %d duration_us %d rate %.1f\n",
      summary.requests, summary.duration, summary.requests / (summary.duration / 1e6)))
   local total = {}
   for _, t in ipairs(threads) do
      local c = t:get("counts")
      if c then
         for code, n in pairs(c) do
            total[code] = (total[code] or 0) + n
         end
      end
   end
   local codes = {}
   for code in pairs(total) do
      table.insert(codes, code)
   end
   table.sort(codes)
   for _, code in ipairs(codes) do
      io.write(string.format("status %d %d\n", code, total[code]))
   end
   io.write(string.format("errors connect %d read %d write %d status %d timeout %d\n",
      summary.errors.connect, summary.errors.read, summary.errors.write,
      summary.errors.status, summary.errors.timeout))
end
