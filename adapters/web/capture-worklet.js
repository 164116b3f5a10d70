// Mic capture: convert to PCM16 and post fixed-size frames with their RMS level to the page. The page
// runs its AudioContext at the target rate, so the browser has already resampled (anti-aliased) the
// mic; only a browser that refused that rate leaves a conversion here (a box-filter average).
class VoiceAgentCapture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = options.processorOptions;
    this.ratio = sampleRate / opts.targetRate;
    this.frameSamples = opts.frameSamples;
    this.frame = new Int16Array(this.frameSamples);
    this.filled = 0;
    this.sumSquares = 0;
    this.acc = 0;
    this.accCount = 0;
    this.phase = 0;
    this.last = 0;
  }

  push(value) {
    const s = Math.max(-1, Math.min(1, value));
    this.sumSquares += s * s;
    this.frame[this.filled++] = s < 0 ? s * 0x8000 : s * 0x7fff;
    if (this.filled === this.frameSamples) {
      const rms = Math.sqrt(this.sumSquares / this.frameSamples);
      this.port.postMessage({ pcm: this.frame.buffer, rms }, [this.frame.buffer]);
      this.frame = new Int16Array(this.frameSamples);
      this.filled = 0;
      this.sumSquares = 0;
    }
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (!channel) return true;
    if (this.ratio === 1) {
      for (let i = 0; i < channel.length; i++) this.push(channel[i]);
      return true;
    }
    for (let i = 0; i < channel.length; i++) {
      this.acc += channel[i];
      this.accCount++;
      this.phase += 1;
      while (this.phase >= this.ratio) {
        // More than one output per input sample only when upsampling: repeat the last value.
        this.phase -= this.ratio;
        const value = this.accCount ? this.acc / this.accCount : this.last;
        this.push(value);
        this.last = value;
        this.acc = 0;
        this.accCount = 0;
      }
    }
    return true;
  }
}

registerProcessor("voiceagent-capture", VoiceAgentCapture);
