import fs from 'node:fs';
const mods=(process.env.MODS||'').split(',').filter(Boolean);
for (const m of mods) await import(m);
setTimeout(()=>{ const s=fs.readFileSync('/proc/self/status','utf8'); console.log(mods.join(',')||'(none)', s.split('\n').filter(l=>/VmRSS|RssAnon|RssFile/.test(l)).map(l=>l.replace(/\s+/g,' ')).join(' | ')); },300);
