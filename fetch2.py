import os, shutil, json
from twotower.data.fetch import fetch_movielens_100k
from twotower.errors import FetchError
B="http://127.0.0.1:18765/"
c="/tmp/h5/cache_good.zip"
t=c+"/ml-100k"
# corrupt a cached file
os.chmod(t+"/u.data",0o644)
with open(t+"/u.data","r+b") as f: f.seek(100); f.write(b"9")
try:
    p=fetch_movielens_100k(cache_dir=c, sources=["cache"], progress=False)
    print("cache-only after corruption: OK?!",p)
except FetchError as e: print("cache-only:", str(e).splitlines()[1])
p=fetch_movielens_100k(cache_dir=c, sources=["cache","grouplens"], grouplens_url=B+"good.zip", progress=True)
print("refetched", p, os.listdir(c))
# truncated manifest
m=t+"/.twotower-manifest.json"
open(m,"w").write("{")
try: fetch_movielens_100k(cache_dir=c, sources=["cache"], progress=False)
except FetchError as e: print("bad manifest:", str(e).splitlines()[1])
# manifest missing u.user listing but ok otherwise; extra file
p=fetch_movielens_100k(cache_dir=c, sources=["cache","grouplens"], grouplens_url=B+"good.zip", progress=False)
print(os.listdir(c))
# cache root is a file
open("/tmp/h5/cachefile","w").write("x")
try: fetch_movielens_100k(cache_dir="/tmp/h5/cachefile", sources=["cache","grouplens"], grouplens_url=B+"good.zip", progress=False)
except FetchError as e: print("cache root is file:", str(e).replace("\n"," | "))
except Exception as e: print("OTHER", type(e).__name__, e)
# ml-100k target is a file
os.makedirs("/tmp/h5/cache_tf",exist_ok=True); open("/tmp/h5/cache_tf/ml-100k","w").write("x")
try: print(fetch_movielens_100k(cache_dir="/tmp/h5/cache_tf", sources=["cache","grouplens"], grouplens_url=B+"good.zip", progress=False))
except FetchError as e: print("target is file:", str(e).replace("\n"," | "))
except Exception as e: print("OTHER target is file", type(e).__name__, e)
# dir source: empty dir / missing u.item ; env var
os.makedirs("/tmp/h5/emptydir",exist_ok=True)
for src in (["dir","cache"],):
    try: fetch_movielens_100k("/tmp/h5/emptydir", cache_dir=c, sources=src, progress=False)
    except FetchError as e: print("dir empty:", str(e)[:200])
