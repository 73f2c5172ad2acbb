// ONNX Runtime's CPU engine, driven line by line from bench/ort_anchor.py so
// that the Python benchmarks can time it rep by rep, alternating with libLWFM
// and PyTorch in the same run (noise on a shared machine then hits all alike).
//
//   node bench/ort_worker.js MODULE_DIR MODEL.onnx INPUT.f32 N C H W THREADS
//
// MODULE_DIR is the onnxruntime-node package folder. Protocol on stdin/stdout,
// one line each way:
//   "run"         -> "ok SECONDS"   one inference, timed inside node (hrtime)
//   "dump PATH"   -> "ok N"         runs once, writes the output as raw float32
//   "quit"        -> exits
// Errors are answered "error MESSAGE" and the worker keeps serving.
"use strict";
const fs = require("fs");
const readline = require("readline");

async function main() {
    const [moduleDir, modelPath, inputPath, n, c, h, w, threads] = process.argv.slice(2);
    const ort = require(moduleDir);
    // What a user deploying ORT on CPU would set: the thread count, and
    // nothing else (spinning and graph optimisation at their defaults).
    const session = await ort.InferenceSession.create(modelPath, {
        executionProviders: ["cpu"],
        intraOpNumThreads: Number(threads),
        interOpNumThreads: 1,
        executionMode: "sequential",
        graphOptimizationLevel: "all",
    });
    const buf = fs.readFileSync(inputPath);
    const data = new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
    const dims = [Number(n), Number(c), Number(h), Number(w)];
    const feeds = { [session.inputNames[0]]: new ort.Tensor("float32", data, dims) };
    const out = session.outputNames[0];
    const lines = readline.createInterface({ input: process.stdin });
    process.stdout.write("ready " + ort.env.versions.common + "\n");
    for await (const line of lines) {
        const [cmd, arg] = line.trim().split(/\s+/, 2);
        try {
            if (cmd === "quit") break;
            const t0 = process.hrtime.bigint();
            const result = await session.run(feeds);
            const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
            if (cmd === "dump") {
                const y = result[out].data;
                fs.writeFileSync(arg, Buffer.from(y.buffer, y.byteOffset, y.byteLength));
                process.stdout.write("ok " + y.length + "\n");
            } else {
                process.stdout.write("ok " + seconds + "\n");
            }
        } catch (e) {
            process.stdout.write("error " + String(e).replace(/\n/g, " ") + "\n");
        }
    }
    process.exit(0);
}

main().catch((e) => {
    process.stdout.write("error " + String(e).replace(/\n/g, " ") + "\n");
    process.exit(1);
});
