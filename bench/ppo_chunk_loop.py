"""PPO update as lax.scan over a static count against lax.fori_loop over a traced one (2026-12-07): env steps/s, alternating rounds in one process, K = 256, 64 envs, ridge proxy."""
import time, numpy as np, jax
from jaxsel import proxy
from jaxsel.cluster import kmeans
from jaxsel.agents import ppo
from jaxsel.agents.env import make_env
rng=np.random.default_rng(0); n,d,k=20000,384,256
x=rng.standard_normal((n,d)).astype(np.float32); y=rng.integers(0,4,n); xv=rng.standard_normal((4000,d)).astype(np.float32); yv=rng.integers(0,4,4000)
cl=kmeans(x,k,seed=0); p=proxy.make(x,y,cl,xv,yv); env,params=make_env(p,cl,y,0.05)
cfg=ppo.PPOConfig(num_envs=64,num_steps=16,total_timesteps=64*16*4); fns=ppo.make_chunks(cfg,env)
r0=jax.jit(fns.init)(jax.random.PRNGKey(0),params)
scan=jax.jit(fns.update, static_argnums=1); loop=jax.jit(fns.update)
a=scan(r0,4,params); b=loop(r0,4,params); print("same", float(a.best.score)==float(b.best.score))
for r in range(3):
    for name,f in (("scan (static n)",scan),("fori_loop (traced n)",loop)):
        t=time.perf_counter(); jax.block_until_ready(f(r0,4,params)); s=time.perf_counter()-t
        print(r, name, round(4*64*16/s), "env steps/s", flush=True)
