-- wrk script for bench/submit.sh: counts every response by status code (wrk's `response`
-- hook) and prints the mix in `done`, one line per status: "status <code> <count>".
--
--   wrk ... -s bench/submit.lua http://127.0.0.1:PORT/v1/extensions -- post API_KEY AUDIO_URL
--       POST a JSON extension request:
--       {"audio_url":AUDIO_URL,"extend_after":5,"length":5,"num_outputs":1}
--       with Authorization: Bearer API_KEY
--       (... -- post API_KEY AUDIO_URL EXTEND_AFTER LENGTH: those two instead of 5 and 5;
--       bench/pipeline.sh uses a short song)
--   wrk ... -s bench/submit.lua http://127.0.0.1:PORT/v1/extensions -- file API_KEY WAV_PATH
--       POST the same request as multipart/form-data with WAV_PATH as audio_file
--       (bench/submit.sh with BENCH_SOURCE=file: the accepted path while the sandbox takes
--       uploaded files only)
--   wrk ... -s bench/submit.lua http://127.0.0.1:PORT/healthz -- get [API_KEY]
--       plain GET (the same status counting, so both runs pay the same Lua cost); with
--       API_KEY, with Authorization: Bearer API_KEY
--
-- Non-202 responses of a post run are what the bench reports as failures.

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   counts = {}
   local mode = args[1] or "get"
   if mode == "post" then
      local key, url = args[2], args[3]
      assert(key and url, "post needs API_KEY and AUDIO_URL")
      wrk.method = "POST"
      wrk.body = string.format(
         '{"audio_url":"%s","extend_after":%s,"length":%s,"num_outputs":1}', url,
         args[4] or "5", args[5] or "5")
      wrk.headers["Content-Type"] = "application/json"
      wrk.headers["Authorization"] = "Bearer " .. key
   elseif mode == "file" then
      local key, path = args[2], args[3]
      assert(key and path, "file needs API_KEY and WAV_PATH")
      local f = assert(io.open(path, "rb"))
      local data = f:read("*a")
      f:close()
      local b = "segue-bench-7d3f9a"
      wrk.method = "POST"
      wrk.body = table.concat({
         "--" .. b,
         'Content-Disposition: form-data; name="audio_file"; filename="song.wav"',
         "Content-Type: audio/wav", "", data,
         "--" .. b, 'Content-Disposition: form-data; name="extend_after"', "", "5",
         "--" .. b, 'Content-Disposition: form-data; name="length"', "", "5",
         "--" .. b, 'Content-Disposition: form-data; name="num_outputs"', "", "1",
         "--" .. b .. "--", ""}, "\r\n")
      wrk.headers["Content-Type"] = "multipart/form-data; boundary=" .. b
      wrk.headers["Authorization"] = "Bearer " .. key
   elseif mode == "get" then
      if args[2] then  -- an API key: an authenticated GET (bench/big_db.sh)
         wrk.headers["Authorization"] = "Bearer " .. args[2]
      end
   else
      error("mode must be post, file or get, not " .. mode)
   end
end

function response(status, headers, body)
   counts[status] = (counts[status] or 0) + 1
end

function done(summary, latency, requests)
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
